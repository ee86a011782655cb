"""
The circuit breaker: when an upstream fails most attempts, stop sending to it for a while.

A gate, inside the retry loop: every attempt is counted, and while the breaker is open no
attempt is sent. Once the break is over it is half-open (on time alone) and one probe goes
through: an upstream success closes the breaker, an upstream failure opens it again for a
longer break (exponential, with jitter, to a cap), anything else (no upstream answer) lets
the next call probe. The state machine itself is `breaker_state.BreakerState`.
Defaults follow Polly v8 and resilience4j, adjusted for the lower traffic of one client in
one worker (shared/RESILIENCE.md §1.6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .._pipeline.attempts import Call, Outcome
from .._pipeline.checks import first_problem, is_count, is_ratio, is_seconds
from .._pipeline.events import CircuitEvent, CircuitState
from .._pipeline.policy import error_phase
from .._pipeline.strategy import Refusal
from ..exceptions import CircuitOpenError, DeadlineExceeded
from .breaker_state import BreakerState, Verdict

__all__ = ["BreakerGate", "BreakerState", "CircuitBreaker", "CircuitStatus", "is_failure", "verdict"]


#: Defaults of `CircuitBreaker` (shared/RESILIENCE.md §1.6).
DEFAULT_FAILURE_RATIO: Final = 0.5
DEFAULT_MINIMUM_THROUGHPUT: Final = 20
DEFAULT_WINDOW: Final = 30.0
DEFAULT_BREAK_DURATION: Final = 5.0
#: No break lasts longer, however many probes failed in a row, nor one read from a shared store.
DEFAULT_MAX_BREAK_DURATION: Final = 60.0

#: Statuses that count as a failure of the upstream (besides transport errors).
FAILURE_STATUSES: Final = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """
    When to stop sending to an upstream that keeps failing, and for how long.

    Off unless given (`Client(circuit_breaker=CircuitBreaker())` or
    `ClientSettings.circuit_breaker`). Failures are transport errors of the upstream
    (connect, read and write errors and timeouts, disconnects) and 408, 429 and 5xx responses;
    other 4xx, local errors, `PoolTimeout` and cancellations never count.

    Attributes:
        failure_ratio: The share of failed attempts over `window` that opens the breaker
            (it opens at or above it).
        minimum_throughput: Attempts over `window` before the ratio is considered at all.
        window: Seconds of attempts the ratio is taken over (in ten rolling buckets).
        break_duration: Seconds the breaker stays open before one probe is let through; also
            the longest a probe holds its slot (a lease) before the next call may probe.
        max_break_duration: The cap on any break (60 s by default): the break doubles (with
            jitter) every time a probe fails, and a break read from a shared store is cut to it.
    """

    failure_ratio: float = DEFAULT_FAILURE_RATIO
    minimum_throughput: int = DEFAULT_MINIMUM_THROUGHPUT
    window: float = DEFAULT_WINDOW
    break_duration: float = DEFAULT_BREAK_DURATION
    max_break_duration: float = DEFAULT_MAX_BREAK_DURATION

    def __post_init__(self) -> None:
        problem = first_problem(
            [
                ("failure_ratio", is_ratio(self.failure_ratio), "must be between 0 and 1"),
                ("minimum_throughput", is_count(self.minimum_throughput, 1), "must be an integer of at least 1"),
                ("window", is_seconds(self.window), "must be a positive number of seconds"),
                ("break_duration", is_seconds(self.break_duration), "must be a positive number of seconds"),
                ("max_break_duration", is_seconds(self.max_break_duration), "must be a positive number of seconds"),
                ("max_break_duration", self.max_break_duration >= self.break_duration, "must be >= break_duration"),
            ]
        )
        if problem is not None:
            raise ValueError(f"CircuitBreaker.{problem}")

    def break_for(self, opened: int, random: float) -> float:
        """The break after the breaker opened `opened` times in a row (1: the first), jittered."""
        grown = min(self.max_break_duration, self.break_duration * 2.0 ** min(opened - 1, 64))
        # Up to a quarter less: pods that opened together do not probe together.
        return grown * (1 - 0.25 * random)


@dataclass(frozen=True, slots=True)
class CircuitStatus:
    """
    A breaker's state, for health checks and readiness routes.

    Attributes:
        state: `"closed"` (sending), `"open"` (refusing) or `"half_open"` (the break is over:
            the next call is the probe, or a probe is out). Half-open comes on time alone, so
            a readiness check never waits for traffic to see the break end.
        failure_ratio: Failed attempts over all attempts in the current window (0 when none).
        attempts: Attempts in the current window.
        retry_after: Seconds until a probe is let through (0.0 unless open).
    """

    state: CircuitState
    failure_ratio: float
    attempts: int
    retry_after: float


def is_failure(outcome: Outcome) -> bool:
    """Whether `outcome` counts against the upstream: its transport errors, 408, 429 and 5xx."""
    if outcome.response is not None:
        status = outcome.response.status_code
        return status >= 500 or status in FAILURE_STATUSES
    error = outcome.error
    if error is None or isinstance(error, DeadlineExceeded):
        return False  # the caller's own time ran out; the upstream is not to blame
    # Connect failures and failures after sending; not local errors, TLS or PoolTimeout.
    return error_phase(error) != "never"


def verdict(outcome: Outcome) -> Verdict:
    """
    What a probe's outcome says of the upstream: only an upstream answer decides.

    A response the breaker does not count as a failure is a success; an upstream failure (its
    transport errors, 408, 429, 5xx) a failure; everything else (the call's deadline, a pool
    timeout, a TLS or local error, a reply that is not HTTP, a cancellation, a refusal by a
    later gate) got no answer from the upstream and only frees the probe slot.
    """
    if outcome.cancelled or outcome.refusal is not None:
        return "no_answer"
    if is_failure(outcome):
        return "failure"
    return "success" if outcome.response is not None else "no_answer"


class BreakerGate:
    """
    The breaker as a strategy: refuses attempts while open, lets one probe through when
    half-open, counts every attempt's outcome. The state machine is `BreakerState`.
    """

    def __init__(
        self,
        state: BreakerState,
        client: str,
        clock: Callable[[], float],
        random: Callable[[], float],
        changed: Callable[[CircuitEvent], None],
    ) -> None:
        self.state = state
        self._client = client
        self._clock = clock
        self._random = random
        #: Told of every state change (the instruments' stream, which also logs it).
        self._changed = changed
        state.listen(self._heard)

    def admit(self, call: Call) -> Refusal | None:
        """Let attempts through while closed; when half-open, one probe (a lease)."""
        state = self.state
        if not state.tripped:
            return None
        now = self._clock()
        lease = state.try_probe(now)
        if lease is None:
            return self._refusal(state.retry_after(now))
        if call.state is None:
            call.state = {}
        call.state[state] = (lease, call.attempt + 1)
        return None

    def ready(self, call: Call) -> Refusal | None:
        """Before a retry goes, after its wait: the breaker may have opened meanwhile."""
        state = self.state
        if not state.tripped:
            return None
        held = None if call.state is None else call.state.get(state)
        now = self._clock()
        if isinstance(held, tuple) and held[0] == state.lease_number and state.probe_out(now):
            return None  # this retry is the probe
        # Its lease expired during the wait (or it had none): a probe only if the slot is free.
        return self.admit(call)

    def record(self, call: Call, outcome: Outcome) -> None:
        """Count the outcome; open the breaker at the ratio; a probe's verdict decides it."""
        state, now = self.state, self._clock()
        held = None if call.state is None else call.state.get(state)
        if isinstance(held, tuple) and outcome.attempt in (0, held[1]):
            del call.state[state]  # type: ignore[union-attr]
            if state.settle(held[0], now, verdict(outcome), self._random):
                return
        if outcome.cancelled or outcome.refusal is not None:
            return  # nothing was sent, or nothing came back: nothing to count
        state.count(now, is_failure(outcome), self._random)

    def status(self) -> CircuitStatus:
        """The state now, for health checks: half-open as soon as the break is over."""
        state, now = self.state, self._clock()
        phase = state.phase(now)
        attempts, failures = state.window(now)
        ratio = failures / attempts if attempts else 0.0
        retry_after = max(0.0, state.open_until - now) if phase == "open" else 0.0
        return CircuitStatus(phase, ratio, attempts, retry_after)

    def force_open(self, seconds: float) -> None:
        """An operator's order: open now for `seconds` (at most the break cap); then probe as usual."""
        self.state.force_open(self._clock(), seconds)

    def force_close(self) -> None:
        """An operator's order: close now, with a fresh window (a shared store closes the fleet's)."""
        self.state.close(self._clock())

    def _heard(self, current: CircuitState, previous: CircuitState, retry_after: float | None) -> None:
        self._changed(CircuitEvent(self._client, current, previous, retry_after=retry_after))

    def _refusal(self, retry_after: float) -> Refusal:
        message = f"Client {self._client!r}: the circuit breaker is open; retry in {retry_after:.1f}s."
        return Refusal("breaker", CircuitOpenError(message, client=self._client, retry_after=retry_after))
