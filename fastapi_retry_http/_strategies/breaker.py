"""
The circuit breaker: when an upstream fails most attempts, stop sending to it for a while.

A gate, inside the retry loop: every attempt is counted, and while the breaker is open no
attempt is sent. After the break one probe goes through (half-open): success closes the
breaker, failure opens it again for a longer break (exponential, with jitter, to a cap).
Defaults follow Polly v8 and resilience4j, adjusted for the lower traffic of one client in
one worker (shared/RESILIENCE.md §1.6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .._pipeline.attempts import Call, Outcome
from .._pipeline.checks import first_problem, is_count, is_ratio, is_seconds
from .._pipeline.events import CircuitEvent, CircuitState
from .._pipeline.policy import error_phase
from .._pipeline.strategy import Refusal
from ..exceptions import CircuitOpenError, DeadlineExceeded

__all__ = ["BreakerGate", "BreakerState", "CircuitBreaker", "CircuitStatus", "is_failure"]


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
        break_duration: Seconds the breaker stays open before one probe is let through.
        max_break_duration: The cap on the break, which doubles (with jitter) every time a
            probe fails.
    """

    failure_ratio: float = 0.5
    minimum_throughput: int = 20
    window: float = 30.0
    break_duration: float = 5.0
    max_break_duration: float = 60.0

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
        state: `"closed"` (sending), `"open"` (refusing) or `"half_open"` (a probe is out).
        failure_ratio: Failed attempts over all attempts in the current window (0 when none).
        attempts: Attempts in the current window.
        retry_after: Seconds until a probe is let through (0 unless open).
    """

    state: CircuitState
    failure_ratio: float
    attempts: int
    retry_after: float


class BreakerState:
    """
    One client's breaker numbers: outcomes over the window in ten buckets, and the break.

    The `MemoryStore` keeps one per client name; a shared store keeps a local one too and
    adds the fleet's view to it.
    """

    BUCKETS: Final = 10

    def __init__(self, config: CircuitBreaker) -> None:
        self.config = config
        self._width = config.window / self.BUCKETS
        self._attempts = [0] * self.BUCKETS
        self._failures = [0] * self.BUCKETS
        self._current = 0
        #: When the break ends (monotonic); `-inf` while closed.
        self.open_until = -math.inf
        #: Times opened in a row without a successful probe (grows the break).
        self.opened = 0
        #: Whether a probe is out (half-open).
        self.probing = False

    def count(self, now: float, failed: bool) -> tuple[int, int]:
        """Count one attempt at `now`; the attempts and failures over the window."""
        self._roll(now)
        slot = self._current % self.BUCKETS
        self._attempts[slot] += 1
        self._failures[slot] += failed
        return sum(self._attempts), sum(self._failures)

    def window(self, now: float) -> tuple[int, int]:
        """The attempts and failures over the window at `now`."""
        self._roll(now)
        return sum(self._attempts), sum(self._failures)

    def reset(self) -> None:
        """Forget the window: a successful probe starts the count afresh."""
        self._attempts = [0] * self.BUCKETS
        self._failures = [0] * self.BUCKETS

    def _roll(self, now: float) -> None:
        index = int(now / self._width)
        for stale in range(max(self._current + 1, index - self.BUCKETS + 1), index + 1):
            self._attempts[stale % self.BUCKETS] = 0
            self._failures[stale % self.BUCKETS] = 0
        self._current = max(self._current, index)


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


class BreakerGate:
    """The breaker as a gate: refuses attempts while open, counts every attempt's outcome."""

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
        self._probe: Call | None = None

    def admit(self, call: Call) -> Refusal | None:
        """Let attempts through while closed; once the break is over, one probe."""
        state, now = self.state, self._clock()
        if state.open_until == -math.inf and not state.probing:
            return None
        if state.probing or now < state.open_until:
            return self._refusal(max(0.0, state.open_until - now))
        state.probing = True  # the break is over: this attempt is the probe
        self._probe = call
        self._changed(CircuitEvent(self._client, "half_open", "open"))
        return None

    def ready(self, call: Call) -> Refusal | None:
        """Before a retry goes, after its wait: the breaker may have opened meanwhile."""
        if call is self._probe or (self.state.open_until == -math.inf and not self.state.probing):
            return None
        return self._refusal(max(0.0, self.state.open_until - self._clock()))

    def record(self, call: Call, outcome: Outcome) -> None:
        """Count the outcome; open the breaker at the ratio; a probe closes or reopens it."""
        state, now = self.state, self._clock()
        if outcome.cancelled:
            if call is self._probe:  # an abandoned probe: the next attempt may probe instead
                self._probe, state.probing = None, False
            return
        failed = is_failure(outcome)
        if call is self._probe:
            self._probe = None
            state.probing = False
            if failed:
                self._open(now, "half_open")
            else:
                self._close()
            return
        attempts, failures = state.count(now, failed)
        config = state.config
        closed = state.open_until == -math.inf and not state.probing
        if closed and attempts >= config.minimum_throughput and failures >= config.failure_ratio * attempts:
            self._open(now, "closed")

    def status(self) -> CircuitStatus:
        """The state now, for health checks."""
        state, now = self.state, self._clock()
        attempts, failures = state.window(now)
        ratio = failures / attempts if attempts else 0.0
        if state.probing:
            return CircuitStatus("half_open", ratio, attempts, 0.0)
        if state.open_until == -math.inf:
            return CircuitStatus("closed", ratio, attempts, 0.0)
        return CircuitStatus("open", ratio, attempts, max(0.0, state.open_until - now))

    def force_open(self, seconds: float) -> None:
        """An operator's order: open now for `seconds`, whatever the counts; then probe as usual."""
        previous = self.status().state
        state = self.state
        self._probe, state.probing = None, False
        state.open_until = self._clock() + seconds
        self._changed(CircuitEvent(self._client, "open", previous, retry_after=seconds))

    def force_close(self) -> None:
        """An operator's order: close now, with a fresh window (a shared store closes the fleet's)."""
        previous = self.status().state
        state = self.state
        self._probe, state.probing = None, False
        state.open_until, state.opened = -math.inf, 0
        state.reset()
        self._changed(CircuitEvent(self._client, "closed", previous))

    def _open(self, now: float, previous: CircuitState) -> None:
        state = self.state
        state.opened += 1
        pause = state.config.break_for(state.opened, self._random())
        state.open_until = now + pause
        self._changed(CircuitEvent(self._client, "open", previous, retry_after=pause))

    def _close(self) -> None:
        state = self.state
        state.open_until, state.opened = -math.inf, 0
        state.reset()
        self._changed(CircuitEvent(self._client, "closed", "half_open"))

    def _refusal(self, retry_after: float) -> Refusal:
        message = f"Client {self._client!r}: the circuit breaker is open; retry in {retry_after:.1f}s."
        return Refusal("breaker", CircuitOpenError(message, client=self._client, retry_after=retry_after))
