"""
Local state with a fleet view merged in: what a shared store (Redis) hands to the gates.

`FleetBudgetCounter` and `FleetBreakerState` *are* the local `BudgetCounter` and
`BreakerState` (the gates do not change): every count goes into the local buckets as before,
and into a small "pending" tally that the store flushes in the background. After each flush
the store sets `fleet`, the fleet's totals over the window (this process's flushed counts
included); decisions then use those totals plus what is pending here. While `fleet` is
`None` (no flush has succeeded yet, or the store is unreachable) they use the local buckets:
exactly the `MemoryStore` behaviour.

Nothing here does I/O: the request path only reads and bumps integers.
"""

from __future__ import annotations

import secrets
from typing import Final

from .._strategies.breaker import BreakerState, CircuitBreaker
from .._strategies.budget import BudgetCounter, RetryBudget

__all__ = ["FleetBreakerState", "FleetBudgetCounter"]

#: Fleet totals: (requests, retries) for a budget, (attempts, failures) for a breaker.
Totals = tuple[int, int]


class FleetBudgetCounter(BudgetCounter):
    """A `BudgetCounter` whose retries are judged on the fleet's traffic when it is known."""

    __slots__ = ("fleet", "pending_requests", "pending_retries")

    def __init__(self, budget: RetryBudget) -> None:
        super().__init__(budget)
        self.pending_requests = 0
        self.pending_retries = 0
        #: The fleet's (requests, retries) over the window at the last flush; `None`: local only.
        self.fleet: Totals | None = None

    @property
    def budget(self) -> RetryBudget:
        """The budget this counter enforces."""
        return self._budget

    def sent(self, now: float) -> None:
        """Count a request here and in the tally the next flush adds to the fleet's."""
        super().sent(now)
        self.pending_requests += 1

    def try_retry(self, now: float) -> bool:
        """Take one retry: from the fleet's budget when it is known, else from the local one."""
        fleet = self.fleet
        if fleet is None:
            allowed = super().try_retry(now)
        else:
            budget = self._budget
            requests, retries = fleet[0] + self.pending_requests, fleet[1] + self.pending_retries
            allowed = retries < budget.min_retries + budget.ratio * requests
            if allowed:  # keep the local buckets right too, for when the fleet view is lost
                if now >= self._bucket_end:
                    self._roll(now)
                self._retries[self._current % self.BUCKETS] += 1
        if allowed:
            self.pending_retries += 1
        return allowed

    def usage(self, now: float) -> tuple[int, int]:
        """The requests and retries over the window: the fleet's when known."""
        local = super().usage(now)
        if self.fleet is None:
            return local
        return self.fleet[0] + self.pending_requests, self.fleet[1] + self.pending_retries

    def take(self) -> Totals:
        """The counts since the last flush, zeroed: what this flush adds to the fleet's."""
        taken = self.pending_requests, self.pending_retries
        self.pending_requests = self.pending_retries = 0
        return taken


class FleetBreakerState(BreakerState):
    """
    A `BreakerState` counting attempts for the fleet, and told of the fleet's break.

    The gate changes `open_until`, `opened` and `probing` as it always has; the store
    compares them with what it last published or adopted (`seen_open_until`) to tell a break
    decided here (published at the next flush) from one adopted from the fleet.
    """

    def __init__(self, config: CircuitBreaker) -> None:
        super().__init__(config)
        self.pending_attempts = 0
        self.pending_failures = 0
        #: The fleet's (attempts, failures) over the window at the last flush; `None`: local only.
        self.fleet: Totals | None = None
        #: A probe here succeeded and reset the window: the next flush closes the fleet's breaker.
        self.closed_here = False
        #: `open_until` as the store last published or adopted it.
        self.seen_open_until = self.open_until
        #: Whether this process holds the fleet's probe lease.
        self.lease = False
        #: Names this state's lease in Redis (one per state: two stores never share one).
        self.token: Final = secrets.token_hex(8)

    def count(self, now: float, failed: bool) -> tuple[int, int]:
        """Count one attempt here and for the fleet; the totals the breaker decides on."""
        local = super().count(now, failed)
        self.pending_attempts += 1
        self.pending_failures += failed
        return local if self.fleet is None else self._fleet_totals()

    def window(self, now: float) -> tuple[int, int]:
        """The attempts and failures over the window: the fleet's when known."""
        local = super().window(now)
        return local if self.fleet is None else self._fleet_totals()

    def reset(self) -> None:
        """A probe here succeeded: forget the window, here and (at the next flush) fleet-wide."""
        super().reset()
        self.pending_attempts = self.pending_failures = 0
        self.fleet = None if self.fleet is None else (0, 0)
        self.closed_here = True

    def take(self) -> Totals:
        """The counts since the last flush, zeroed."""
        taken = self.pending_attempts, self.pending_failures
        self.pending_attempts = self.pending_failures = 0
        return taken

    def close_from_fleet(self) -> None:
        """Another process's probe succeeded: close here too, with a fresh window."""
        BreakerState.reset(self)
        self.open_until = self.seen_open_until = -float("inf")
        self.opened = 0
        self.lease = False

    def _fleet_totals(self) -> tuple[int, int]:
        assert self.fleet is not None
        return self.fleet[0] + self.pending_attempts, self.fleet[1] + self.pending_failures
