"""
The retry budget: retries are a small share of a client's traffic, so an outage upstream is
not met with three times the load.

Without a budget, N callers hitting a failing upstream with 3 attempts each send 3N requests,
exactly when it can least take them (a retry storm). Finagle, Envoy and gRPC cap retries at a
share of recent requests; this is the same idea, per client, in memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .._pipeline.attempts import Call, Outcome
from .._pipeline.strategy import Refusal

__all__ = ["BudgetCounter", "BudgetGate", "RetryBudget"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: The budget's floor when `min_retries` is not given: Finagle's 10 retries a second.
MIN_RETRIES_PER_SECOND: Final = 10


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """
    At most `min_retries + ratio * requests` retries per `window` seconds, per client.

    The floor is Finagle's: 10 retries a second whatever the traffic (`min_retries=100` for
    the default 10 s window, and scaled with `window` when left unset), so a quiet client
    always gets its retries: 15 calls in a row that each need two retries all succeed.
    Above the floor, a busy client may add half again its traffic, never twice more: under
    load an upstream answering only 503 sees at most about 1.5 requests per call. Half, not
    the 20% of Finagle or Envoy: with 20% of responses failing, a 20% budget runs dry and
    the success rate fell from 99.3% to 97.2% (measured with bench/); at 50% it holds.
    When the budget is spent, a call that would retry returns its response or raises its
    error at once, with a note saying so.

    Attributes:
        ratio: Retries allowed per request sent, over the window.
        min_retries: Retries allowed per window whatever the traffic; by default
            `MIN_RETRIES_PER_SECOND` (10) for each second of `window`.
        window: Seconds of history the budget looks at.
    """

    ratio: float = 0.5
    min_retries: int = None  # type: ignore[assignment]  # filled in from `window` below
    window: float = 10.0

    def __post_init__(self) -> None:
        if not (self.window > 0 and math.isfinite(self.window)):
            raise ValueError("RetryBudget.window must be a positive number of seconds")
        if self.min_retries is None:
            object.__setattr__(self, "min_retries", round(MIN_RETRIES_PER_SECOND * self.window))
        if not (self.ratio >= 0 and math.isfinite(self.ratio)):
            raise ValueError("RetryBudget.ratio must be a finite number, zero or more")
        if isinstance(self.min_retries, bool) or not isinstance(self.min_retries, int) or self.min_retries < 0:
            raise ValueError("RetryBudget.min_retries must be an integer, zero or more")


class BudgetCounter:
    """Requests and retries over the last `window` seconds, in ten rolling buckets."""

    BUCKETS = 10

    __slots__ = ("_bucket_end", "_budget", "_current", "_requests", "_retries", "_width", "window")

    def __init__(self, budget: RetryBudget) -> None:
        self._budget = budget
        self.window = budget.window
        self._width = budget.window / self.BUCKETS
        self._requests = [0] * self.BUCKETS
        self._retries = [0] * self.BUCKETS
        self._current = 0
        self._bucket_end = -math.inf

    def _roll(self, now: float) -> None:
        index = int(now / self._width)
        # Empty the buckets that time has passed over since the last request or retry.
        for stale in range(max(self._current + 1, index - self.BUCKETS + 1), index + 1):
            self._requests[stale % self.BUCKETS] = 0
            self._retries[stale % self.BUCKETS] = 0
        self._current = index
        self._bucket_end = (index + 1) * self._width

    def sent(self, now: float) -> None:
        """Count a request (its first attempt) sent at `now`. On every request: kept cheap."""
        if now >= self._bucket_end:
            self._roll(now)
        self._requests[self._current % self.BUCKETS] += 1

    @property
    def budget(self) -> RetryBudget:
        """The budget this counter enforces."""
        return self._budget

    def usage(self, now: float) -> tuple[int, int]:
        """The requests and retries counted over the window at `now` (for the dashboard)."""
        if now >= self._bucket_end:
            self._roll(now)
        return sum(self._requests), sum(self._retries)

    def try_retry(self, now: float) -> bool:
        """Take one retry from the budget at `now`, if it has one."""
        if now >= self._bucket_end:
            self._roll(now)
        if sum(self._retries) >= self._budget.min_retries + self._budget.ratio * sum(self._requests):
            return False
        self._retries[self._current % self.BUCKETS] += 1
        return True


#: The retry budget every client gets unless told otherwise: 100 retries + 50% of requests per 10 s.
DEFAULT_BUDGET: Final = RetryBudget()


class BudgetGate:
    """
    The retry budget as a gate: every first attempt is counted and goes; a retry goes only
    while the budget has one. A spent budget is logged once per window, not once per call.
    """

    __slots__ = ("_clock", "_counter", "_warned_at")

    #: What a refused retry says, in events and in the note on a raised error.
    SPENT: Final = Refusal("budget")

    def __init__(self, counter: BudgetCounter, clock: Callable[[], float]) -> None:
        self._counter = counter
        self._clock = clock
        self._warned_at = -math.inf

    def admit(self, call: Call) -> Refusal | None:
        """Count a first attempt; take a retry from the budget, or refuse it."""
        now = self._clock()
        if call.attempt == 0:
            self._counter.sent(now)
            return None
        if self._counter.try_retry(now):
            return None
        if now - self._warned_at >= self._counter.window:
            # Once per window: during an outage every call would say the same.
            self._warned_at = now
            logger.warning(
                "%s: retry budget spent; failing calls are not retried until it refills.",
                call.client,
                extra={"client": call.client, "reason": "budget"},
            )
        return self.SPENT

    def record(self, call: Call, outcome: Outcome) -> None:
        """The budget counts requests and retries, not their outcomes."""

    def status(self) -> dict[str, object]:
        """The budget now: requests and retries over the window, and the retries left."""
        counter = self._counter
        requests, retries = counter.usage(self._clock())
        budget = counter.budget
        allowed = budget.min_retries + budget.ratio * requests
        return {
            "window": counter.window,
            "requests": requests,
            "retries": retries,
            "retries_left": max(0, math.ceil(allowed - retries)),
            "scope": "fleet" if getattr(counter, "fleet", None) is not None else "process",
        }
