"""
Local state with a fleet view merged in: what a shared store (Redis) hands to the gates.

`FleetBudgetCounter` and `FleetBreakerState` *are* the local `BudgetCounter` and
`BreakerState` (the gates and the breaker's state machine do not change): every count goes
into the local buckets as before, and into a small "pending" tally that the store flushes in
the background. After each flush the store sets `fleet`, the fleet's totals over the window
(this process's flushed counts included); decisions then use those totals plus what is
pending here. While `fleet` is `None` (no flush has succeeded yet, or the store is
unreachable) they use the local buckets: exactly the `MemoryStore` behaviour.

Nothing here does I/O: the request path only reads and bumps integers.
"""

from __future__ import annotations

import math
import secrets
from typing import Final, Literal

from .._strategies.breaker import BreakerState, CircuitBreaker
from .._strategies.budget import BudgetCounter, RetryBudget

__all__ = ["DEFAULT_PREFIX", "FleetBreakerState", "FleetBudgetCounter"]

#: The start of every key of a shared store (`HttpClientsSettings.http_clients_redis_prefix`).
DEFAULT_PREFIX: Final = "fastapi_retry_http"

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

    def untake(self, taken: Totals) -> None:
        """A flush failed: its counts go into the next one, not lost."""
        self.pending_requests += taken[0]
        self.pending_retries += taken[1]


class FleetBreakerState(BreakerState):
    """
    A `BreakerState` counting attempts for the fleet, and fed the fleet's changes.

    The state machine is the local one; the store's flush (`fleet_sync`) publishes what was
    decided here (`publish`), and feeds in what other processes decided through
    `adopt_open`/`adopt_close`. While the fleet's view is known (`fleet` is not `None`), a
    half-open probe needs the fleet's probe lease as well as the local one: a call refused for
    want of it asks for it at the next flush (`demand`). While it is `None` (no flush has
    succeeded yet, or Redis is unreachable) the state is exactly a `MemoryStore`'s.
    """

    def __init__(self, config: CircuitBreaker) -> None:
        super().__init__(config)
        self.pending_attempts = 0
        self.pending_failures = 0
        #: The fleet's (attempts, failures) over the window at the last flush; `None`: local only.
        self.fleet: Totals | None = None
        #: A change decided here that the next flush publishes: `"open"`, `"close"` or `""`.
        self.publish = ""
        #: Changes decided here so far (a flush adopts nothing decided before one of them).
        self.decided = 0
        #: Until when this process holds the fleet's probe lease (monotonic).
        self.fleet_lease_until = -math.inf
        #: Whether a probe was let through under the fleet lease held now.
        self.lease_used = False
        #: A call here was refused for want of the fleet's probe lease since the last flush.
        self.demand = False
        #: Flushes to sit out before asking for the lease again, after giving one up unused.
        self.cooldown = 0
        #: The value of the fleet's "closed" marker last seen (another process's close).
        self.seen_close = ""
        #: Names this state's lease and closes in Redis (one per state: two stores never share one).
        self.token: Final = secrets.token_hex(8)

    def tally(self, now: float, failed: bool) -> None:
        """Count one attempt here and for the fleet (sent at the next flush)."""
        super().tally(now, failed)
        self.pending_attempts += 1
        self.pending_failures += failed

    def window(self, now: float) -> tuple[int, int]:
        """The attempts and failures over the window: the fleet's when known."""
        local = super().window(now)
        return local if self.fleet is None else self._fleet_totals()

    def reset(self) -> None:
        """A probe succeeded: forget the window, here and (at the next flush) fleet-wide."""
        super().reset()
        self.pending_attempts = self.pending_failures = 0
        self.fleet = None if self.fleet is None else (0, 0)

    def take(self) -> Totals:
        """The counts since the last flush, zeroed."""
        taken = self.pending_attempts, self.pending_failures
        self.pending_attempts = self.pending_failures = 0
        return taken

    def untake(self, taken: Totals) -> None:
        """A flush failed: its counts go into the next one, not lost."""
        self.pending_attempts += taken[0]
        self.pending_failures += taken[1]

    def go_local(self) -> None:
        """Redis is out of reach: decide alone, as with a `MemoryStore`, until it is back."""
        self.fleet = None
        self.fleet_lease_until = -math.inf
        self.lease_used = self.demand = False

    def _may_probe(self, now: float) -> bool:
        if self.fleet is None or now < self.fleet_lease_until:
            self.lease_used = True
            return True
        self.demand = True  # ask for the fleet's lease at the next flush
        return False

    def _lease(self, now: float) -> float:
        lease = super()._lease(now)
        # Never past the fleet's lease: another process may probe once it expires in Redis.
        return lease if self.fleet is None else max(0.0, min(lease, self.fleet_lease_until - now))

    def _published(self, change: Literal["open", "close"]) -> None:
        self.publish = change
        self.decided += 1
        self.fleet_lease_until = -math.inf  # the script frees the lease with the change

    def _fleet_totals(self) -> tuple[int, int]:
        assert self.fleet is not None
        return self.fleet[0] + self.pending_attempts, self.fleet[1] + self.pending_failures
