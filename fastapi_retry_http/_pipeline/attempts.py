"""The vocabulary every stage shares: a call on its way through, and what one attempt gave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx

from .policy import RetryPolicy

if TYPE_CHECKING:
    from .admission import Waiting
    from .strategy import Refusal

__all__ = ["OPTIONS_EXTENSION", "Call", "CallOptions", "Outcome", "call_options", "replayable"]

#: `request.extensions` key of a call's `CallOptions` (absent: the client's defaults).
OPTIONS_EXTENSION: Final = "fastapi_retry_http.options"


@dataclass(frozen=True, slots=True)
class CallOptions:
    """
    What one call asks of the pipeline beyond the client's defaults, as one typed object in
    `request.extensions["fastapi_retry_http.options"]`.

    Attributes:
        retry: This call's retry policy, in place of the client's.
        stream: Return the response at its headers, body unread (what `Client.stream()`
            does); otherwise the body is read inside the attempt, so that a reset or a
            truncation while reading it is retried like any other failure.
    """

    retry: RetryPolicy | None = None
    stream: bool = False


#: A call that asks nothing.
_DEFAULTS: Final = CallOptions()


def call_options(request: httpx.Request) -> CallOptions:
    """The options `request` carries, or the defaults."""
    options: CallOptions = request.extensions.get(OPTIONS_EXTENSION, _DEFAULTS)
    return options


def replayable(stream: object) -> bool:
    """
    Whether a request body can be sent again as it was.

    httpx's in-memory bodies (`ByteStream`) and multipart bodies (which re-read their files)
    are both sync and async streams; a body from an async iterator is async only, and is
    consumed by its first send.
    """
    return isinstance(stream, httpx.SyncByteStream) and isinstance(stream, httpx.AsyncByteStream)


@dataclass(slots=True)
class Call:
    """
    One request on its way through the pipeline: what the stages read and update.

    Attributes:
        request: The request, sent unchanged by every attempt.
        policy: The retry policy in force for it.
        client: The client's name.
        deadline_at: The clock reading at which the call is out of time, or `None`.
        retries: Whether the call may be retried at all (a replayable body, `attempts > 1`).
        attempt: Attempts started so far (0 before the first).
    """

    request: httpx.Request
    policy: RetryPolicy
    client: str
    deadline_at: float | None
    retries: bool
    attempt: int = 0
    #: A retry admitted on condition of a wait, awaited right before it is sent.
    pending: Waiting | None = None
    #: A retry every strategy admitted at once, not sent yet (the backoff wait is on).
    granted: bool = False
    #: `time.perf_counter()` when the call began, if anyone listens to its events.
    started: float = 0.0
    #: Anything a strategy keeps for the call (slots held, a probe's lease), by strategy.
    state: dict[object, object] | None = None

    def lost(self) -> bool:
        """Whether an attempt of this call cancelled now lost a race (only a hedged call races)."""
        return False


class Outcome:
    """
    What one attempt gave: a response or an error, and whether it may be retried; or nothing,
    when it was cancelled (the caller went away, or another hedged attempt won).
    """

    __slots__ = ("attempt", "cancelled", "duration", "error", "injected", "refusal", "response", "retryable")

    def __init__(
        self,
        *,
        response: httpx.Response | None = None,
        error: Exception | None = None,
        retryable: bool = False,
        duration: float = 0.0,
        cancelled: bool = False,
        attempt: int = 0,
        refusal: Refusal | None = None,
    ) -> None:
        self.response = response
        self.error = error
        self.retryable = retryable
        self.duration = duration
        self.cancelled = cancelled
        #: Which attempt of the call gave it (hedged attempts overlap).
        self.attempt = attempt
        #: Set when a later strategy refused an admitted attempt: nothing was sent.
        self.refusal = refusal
        #: Whether the outcome was injected (chaos) rather than given by the upstream.
        self.injected = False

    @property
    def reason(self) -> str:
        """The status code, or the error's class name: what log records and events show."""
        if self.cancelled:
            return "cancelled"
        if self.error is not None:
            return type(self.error).__name__
        assert self.response is not None
        return str(self.response.status_code)

    def unwrap(self) -> httpx.Response:
        """The response, or raise the error."""
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response
