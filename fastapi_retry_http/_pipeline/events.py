"""
The event seam: what happened to each attempt, for instruments (metrics, traces) and logs.

One `AttemptEvent` per attempt, delivered once its fate is known: retried (with the wait),
or final (and why the call stopped there). Nothing is built when a client has no instrument:
the success path pays nothing for the seam.

Two optional hooks join the same stream: `start_attempt(request, attempt, client)` (before an
attempt is sent: what a tracer needs to start a span and send its `traceparent`), whose scope
is ended with the attempt's response or error; and `on_circuit(event)`, a breaker's state
change (`CircuitEvent`). An instrument without them is never asked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

import httpx

__all__ = [
    "AttemptEvent",
    "AttemptScope",
    "CircuitEvent",
    "CircuitInstrument",
    "Instrument",
    "Instruments",
    "ScopedInstrument",
]

logger: Final = logging.getLogger("fastapi_retry_http")

Outcome = Literal["success", "retry", "returned", "failed", "cancelled", "hedge_lost", "refused"]
StopReason = Literal[
    "attempts", "deadline", "budget", "breaker", "retry_after", "rate_limit", "throttle", "concurrency"
]
CircuitState = Literal["closed", "open", "half_open"]


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
            (the caller went away), `"hedge_lost"` (another attempt answered first),
            `"refused"` (a strategy refused the call before its first attempt: nothing was sent).
        wait: Seconds before the next attempt, for `"retry"`; otherwise `None`.
        reason: Why the call stopped retrying, for `"returned"`, or why it was refused, for
            `"refused"`: `"attempts"`, `"deadline"`, `"budget"`, `"breaker"`, `"retry_after"`,
            `"rate_limit"`, `"throttle"` or `"concurrency"`; otherwise `None`.
        injected: Whether the outcome was injected by chaos (`fastapi_retry_http.chaos`), so
            that dashboards and alerts can tell a drill from an outage.
        call_duration: On the event that ends a call (its final attempt, or its refusal): the
            call's wall time in seconds, waits and hedges included; otherwise `None`.
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
    injected: bool = False
    call_duration: float | None = None


@dataclass(frozen=True, slots=True)
class CircuitEvent:
    """
    A circuit breaker changed state: the sibling of `AttemptEvent` in the same stream.

    Attempts the breaker refuses show in `AttemptEvent`s (`reason="breaker"`); this event
    says when it opened, let a probe through, or closed again.

    Attributes:
        client: The client's name.
        state: The new state: `"open"` (no attempt is sent), `"half_open"` (one probe
            is let through) or `"closed"`.
        previous: The state before.
        retry_after: For `"open"`: seconds until a probe is allowed; otherwise `None`.
    """

    client: str
    state: CircuitState
    previous: CircuitState
    retry_after: float | None = None


class Instrument(Protocol):
    """Anything with `on_attempt(event)`: metrics, traces, a test's recorder."""

    def on_attempt(self, event: AttemptEvent) -> None:
        """Called once per attempt, after its fate is known. Must not block."""


class AttemptScope(Protocol):
    """What `start_attempt` returns: ended once, when the attempt has its response or error."""

    def end(self, response: httpx.Response | None, error: BaseException | None) -> None:
        """
        The attempt is over: `response` (its body read, unless streamed), or `error` (an
        `asyncio.CancelledError` when the caller went away). Must not block.
        """


@runtime_checkable
class ScopedInstrument(Instrument, Protocol):
    """An instrument that also hears of each attempt before it is sent (tracing)."""

    def start_attempt(self, request: httpx.Request, attempt: int, client: str) -> AttemptScope | None:
        """
        Attempt `attempt` (1-based) of `request` is about to be sent; it may still change
        `request.headers` (a `traceparent`: the same request object goes out on every attempt,
        so set the header, never append). Returns a scope to end, or `None`.
        """


@runtime_checkable
class CircuitInstrument(Instrument, Protocol):
    """An instrument that also hears of circuit breaker state changes."""

    def on_circuit(self, event: CircuitEvent) -> None:
        """Called on every state change of a breaker. Must not block."""


class Instruments:
    """The instruments of one client. One that raises is logged once and never breaks a request."""

    __slots__ = ("_broken", "_circuit", "_instruments", "_scoped", "scoped")

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._instruments = tuple(instruments)
        self._broken: set[int] = set()
        # Decided once here: the request path asks a bool, never the instruments.
        self._scoped = tuple(i for i in self._instruments if callable(getattr(i, "start_attempt", None)))
        self._circuit = tuple(i for i in self._instruments if callable(getattr(i, "on_circuit", None)))
        #: Whether any instrument wants to hear of attempts before they are sent.
        self.scoped = bool(self._scoped)

    def __bool__(self) -> bool:
        return bool(self._instruments)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._instruments)

    def emit(self, event: AttemptEvent) -> None:
        """Hand `event` to every instrument."""
        for instrument in self._instruments:
            try:
                instrument.on_attempt(event)
            except Exception:
                self._raised(instrument, event.client)

    def start(self, request: httpx.Request, attempt: int, client: str) -> Scopes:
        """Tell the instruments with `start_attempt` that an attempt is about to be sent."""
        scopes: list[tuple[object, AttemptScope]] = []
        for instrument in self._scoped:
            try:
                scope = instrument.start_attempt(request, attempt, client)  # type: ignore[attr-defined]
            except Exception:
                self._raised(instrument, client)
            else:
                if scope is not None:
                    scopes.append((instrument, scope))
        return Scopes(self, scopes, client)

    def emit_circuit(self, event: CircuitEvent) -> None:
        """Log a breaker's state change, and hand `event` to the instruments with `on_circuit`."""
        from .logs import log_circuit

        log_circuit(event)
        for instrument in self._circuit:
            try:
                instrument.on_circuit(event)  # type: ignore[attr-defined]
            except Exception:
                self._raised(instrument, event.client)

    def _raised(self, instrument: object, client: str) -> None:
        if id(instrument) not in self._broken:
            self._broken.add(id(instrument))
            logger.exception(
                "%s: instrument %s raised; its later errors are not logged.",
                client,
                type(instrument).__name__,
                extra={"client": client},
            )


class Scopes:
    """The scopes of one attempt, ended together."""

    __slots__ = ("_client", "_instruments", "_scopes")

    def __init__(self, instruments: Instruments, scopes: list[tuple[object, AttemptScope]], client: str) -> None:
        self._instruments = instruments
        self._scopes = scopes
        self._client = client

    def end(self, response: httpx.Response | None, error: BaseException | None) -> None:
        """End every scope; one that raises is logged once (per instrument) and skipped."""
        for instrument, scope in self._scopes:
            try:
                scope.end(response, error)
            except Exception:
                self._instruments._raised(instrument, self._client)
