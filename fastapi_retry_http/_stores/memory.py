"""
The state-store seam: where the gates keep their counters.

A gate never owns its numbers: it asks the store for them by client name. `MemoryStore` keeps
them in this process (each `RetryTransport` gets its own unless given one); a store shared by
several processes (Redis) implements the same interface, so the gates do not change.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from .._strategies.breaker import BreakerState, CircuitBreaker
from .._strategies.budget import BudgetCounter, RetryBudget
from .._strategies.rate_limit import Limiter, RateLimit
from .._strategies.slots import Schedule
from .._strategies.throttle import AdaptiveThrottle, ThrottleCounter

__all__ = ["MemoryStore", "StateStore"]


class StateStore(Protocol):
    """Keeps the state of the gates of every client that uses it, by client name."""

    def budget_counter(self, client: str, budget: RetryBudget) -> BudgetCounter:
        """The request and retry counts of `client`'s retry budget."""

    def breaker_state(self, client: str, breaker: CircuitBreaker) -> BreakerState:
        """The counts and the break of `client`'s circuit breaker."""

    def throttle_counter(self, client: str, throttle: AdaptiveThrottle) -> ThrottleCounter:
        """The request and accept counts of `client`'s adaptive throttle."""

    def rate_limiter(self, client: str, limit: RateLimit) -> Limiter:
        """The slots of `client`'s rate limit (shared by every client of that name on the store)."""

    async def start(self) -> None:
        """Begin sharing (connect, start background work); never fails because of a backend."""

    async def aclose(self) -> None:
        """Stop sharing and release what `start()` took."""


class MemoryStore:
    """
    State kept in this process: clients of the same name that share this store share their
    counters; a client given no store gets one of its own.
    """

    def __init__(self) -> None:
        self._budgets: dict[tuple[str, RetryBudget], BudgetCounter] = {}
        self._breakers: dict[tuple[str, CircuitBreaker], BreakerState] = {}
        self._throttles: dict[tuple[str, AdaptiveThrottle], ThrottleCounter] = {}
        self._limiters: dict[tuple[str, RateLimit], Schedule] = {}

    def budget_counter(self, client: str, budget: RetryBudget) -> BudgetCounter:
        """The counter of `client` for `budget`, made at the first ask."""
        return self._budgets.setdefault((client, budget), BudgetCounter(budget))

    def breaker_state(self, client: str, breaker: CircuitBreaker) -> BreakerState:
        """The breaker state of `client` for `breaker`, made at the first ask."""
        return self._breakers.setdefault((client, breaker), BreakerState(breaker))

    def throttle_counter(self, client: str, throttle: AdaptiveThrottle) -> ThrottleCounter:
        """The throttle counts of `client` for `throttle`, made at the first ask."""
        counter = self._throttles.get((client, throttle))
        if counter is None:
            counter = self._throttles[(client, throttle)] = ThrottleCounter(throttle)
        return counter

    def rate_limiter(self, client: str, limit: RateLimit) -> Schedule:
        """The slot schedule of `client` for `limit`, made at the first ask."""
        key = (client, limit)
        if key not in self._limiters:
            self._limiters[key] = Schedule(limit.interval, limit.burst or 0)
        return self._limiters[key]

    async def start(self) -> None:
        """Nothing to start: the state is in this process."""

    async def aclose(self) -> None:
        """Nothing to close."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
