"""
The decide stage, after a retryable attempt: how long to wait, or why to stop instead; and
what each attempt's event says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import httpx

from .._safety.redact import url_without_query
from .attempts import Call, Outcome
from .events import AttemptEvent, Instruments, StopReason
from .logs import log_gave_up, log_retry
from .policy import RETRY_AFTER_STATUSES, parse_retry_after
from .send import discard
from .strategy import Refusal

if TYPE_CHECKING:
    from .admission import Waiting

__all__ = ["Decisions", "event", "final_kind", "refused"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: The event outcomes that end a call.
_ENDS_CALL: Final = frozenset({"success", "returned", "failed"})

#: How many characters of an unusable `Retry-After` value a warning quotes.
RETRY_AFTER_SHOWN: Final = 40


class Decisions:
    """The engine's `Rules` for one call: wait, stop, and what to do before the next attempt."""

    __slots__ = ("_admit", "_call", "_clock", "_instruments", "_random", "stopped")

    def __init__(
        self,
        call: Call,
        admit: Callable[[Call], Refusal | Waiting | None],
        instruments: Instruments,
        clock: Callable[[], float],
        random: Callable[[], float],
    ) -> None:
        self._call = call
        self._admit = admit
        self._instruments = instruments
        self._clock = clock
        self._random = random
        #: Why the call stopped retrying, once it has.
        self.stopped: StopReason | None = None

    def wait(self, outcome: Outcome) -> float:
        """Retry-After where the server sent a usable one, otherwise the policy's backoff."""
        call, policy = self._call, self._call.policy
        if call.attempt >= policy.attempts:
            return 0.0  # tenacity asks for the wait before it asks stop(); none follows.
        if outcome.response is not None:
            delay = _retry_after(outcome.response, call.client)
            if delay is not None:
                # Beyond the cap the server asks for more patience than we have: stop.
                return delay if delay <= policy.retry_after_max else float("inf")
        return policy.backoff(call.attempt, self._random())

    def stop(self, outcome: Outcome, wait: float) -> StopReason | None:
        """The first rule that ends the call here: attempts, Retry-After, deadline, then the gates."""
        call = self._call
        if call.attempt >= call.policy.attempts:
            return "attempts"
        if wait == float("inf"):
            return "retry_after"
        # A wait that ends past the deadline would only delay the same answer.
        if call.deadline_at is not None and self._clock() + wait >= call.deadline_at:
            return "deadline"
        answer = self._admit(call)
        if isinstance(answer, Refusal):
            return answer.reason  # type: ignore[return-value]
        # A strategy that waits for a slot is awaited after the backoff wait, right before the send.
        call.pending = answer
        call.granted = answer is None
        return None

    async def before_wait(self, outcome: Outcome, wait: float) -> None:
        """Release the response that will not be returned, log the retry, tell the instruments."""
        call = self._call
        if outcome.response is not None:
            await discard(outcome.response)
        log_retry(call.client, call.request, call.attempt, call.policy.attempts, outcome.reason, wait)
        if self._instruments:
            self._instruments.emit(event(call, outcome, "retry", wait=wait))

    def gave_up(self, outcome: Outcome, reason: str) -> None:
        """Remember why, log it, and tell the instruments."""
        self.stopped = stopped = reason  # type: ignore[assignment]
        call = self._call
        log_gave_up(call.client, call.request, call.attempt, call.policy.attempts, outcome.reason, stopped)  # type: ignore[arg-type]
        if self._instruments:
            self._instruments.emit(event(call, outcome, "returned", reason=self.stopped))


def event(
    call: Call,
    outcome: Outcome,
    kind: str,
    *,
    wait: float | None = None,
    reason: StopReason | None = None,
) -> AttemptEvent:
    """The event of `call`'s latest attempt, which gave `outcome` (the call's time if it ends it)."""
    response, error = outcome.response, outcome.error
    return AttemptEvent(
        client=call.client,
        method=call.request.method,
        url=url_without_query(call.request.url),
        attempt=outcome.attempt or call.attempt,
        status_code=None if response is None else response.status_code,
        error=None if error is None else type(error).__name__,
        duration=outcome.duration,
        outcome=kind,  # type: ignore[arg-type]
        wait=wait,
        reason=reason,
        injected=outcome.injected,
        call_duration=time.perf_counter() - call.started if kind in _ENDS_CALL else None,
    )


def refused(call: Call, error: Exception, reason: str) -> AttemptEvent:
    """The one event of a call refused before its first attempt: nothing was sent."""
    return AttemptEvent(
        client=call.client,
        method=call.request.method,
        url=url_without_query(call.request.url),
        attempt=1,
        status_code=None,
        error=type(error).__name__,
        duration=0.0,
        outcome="refused",
        reason=reason,  # type: ignore[arg-type]
        call_duration=time.perf_counter() - call.started,
    )


def final_kind(call: Call, outcome: Outcome) -> str:
    """The event outcome of an attempt that is not retried: a success, or a failure."""
    response = outcome.response
    if response is None:
        return "failed"
    status = response.status_code
    return "failed" if status >= 500 or status in call.policy.statuses else "success"


def _retry_after(response: httpx.Response, client: str) -> float | None:
    if response.status_code not in RETRY_AFTER_STATUSES:
        return None
    header = response.headers.get("retry-after")
    if header is None:
        return None
    delay = parse_retry_after(header)
    if delay is None:
        # As urllib3 and httpx-retries do: an upstream sending these wants to hear about it.
        # The value is the server's, not a secret of ours; shown cut short and escaped.
        shown = ascii(header[:RETRY_AFTER_SHOWN]) + ("..." if len(header) > RETRY_AFTER_SHOWN else "")
        logger.warning(
            "%s: unusable Retry-After %s on a %d response; using the backoff instead.",
            client,
            shown,
            response.status_code,
            extra={"client": client, "retry_after": shown, "status_code": response.status_code},
        )
    return delay
