"""
The event seam: what happened to each attempt, for instruments (metrics, traces) and logs.

One `AttemptEvent` per attempt, delivered once its fate is known: retried (with the wait),
or final (and why the call stopped there). Nothing is built when a client has no instrument:
the success path pays nothing for the seam.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import httpx

from .._safety.redact import url_without_query

__all__ = ["AttemptEvent", "Instrument", "Instruments", "log_retry"]

logger: Final = logging.getLogger("fastapi_retry_http")

Outcome = Literal["success", "retry", "returned", "failed", "cancelled", "hedge_lost"]
StopReason = Literal["attempts", "deadline", "budget", "breaker", "retry_after"]


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """
    What happened to one attempt, delivered to every instrument once the attempt's fate is known.

    Attributes:
        client: The client's name.
        method: The HTTP method.
        url: The URL, without query or userinfo.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        status_code: The response status, or `None` when the attempt raised.
        error: The class name of the error the attempt raised, or `None`.
        duration: Seconds the attempt took (waits not included).
        outcome: `"success"` (a response that is not a failure), `"retry"` (another attempt
            follows after `wait`), `"returned"` (a retryable failure given to the caller
            because `reason` ended the retries), `"failed"` (not retryable), `"cancelled"`
            (the caller went away), `"hedge_lost"` (another attempt answered first).
        wait: Seconds before the next attempt, for `"retry"`; otherwise `None`.
        reason: Why the call stopped retrying, for `"returned"`: `"attempts"`, `"deadline"`,
            `"budget"`, `"breaker"` or `"retry_after"`; otherwise `None`.
    """

    client: str
    method: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    duration: float
    outcome: Outcome
    wait: float | None = None
    reason: StopReason | None = None


class Instrument(Protocol):
    """Anything with `on_attempt(event)`: metrics, traces, a test's recorder."""

    def on_attempt(self, event: AttemptEvent) -> None:
        """Called once per attempt, after its fate is known. Must not block."""


class Instruments:
    """The instruments of one client. One that raises is logged once and never breaks a request."""

    __slots__ = ("_broken", "_instruments")

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._instruments = tuple(instruments)
        self._broken: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._instruments)

    def emit(self, event: AttemptEvent) -> None:
        """Hand `event` to every instrument."""
        for instrument in self._instruments:
            try:
                instrument.on_attempt(event)
            except Exception:
                if id(instrument) not in self._broken:
                    self._broken.add(id(instrument))
                    logger.exception(
                        "%s: instrument %s raised; its later errors are not logged.",
                        event.client,
                        type(instrument).__name__,
                        extra={"client": event.client},
                    )


def log_retry(client: str, request: httpx.Request, attempt: int, attempts: int, reason: str, wait: float) -> None:
    """One INFO record per retry, with its fields as `extra` attributes; no header or query values."""
    where = url_without_query(request.url)
    logger.info(
        "%s: %s %s failed (%s) on attempt %d/%d; retrying in %.3fs",
        client,
        request.method,
        where,
        reason,
        attempt,
        attempts,
        wait,
        extra={
            "client": client,
            "method": request.method,
            "url": where,
            "attempt": attempt,
            "attempts": attempts,
            "reason": reason,
            "wait": wait,
        },
    )
