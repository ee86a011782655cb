"""
A concurrency limit: at most `limit` attempts of a client in flight, the rest wait briefly for
a slot or are refused. Adaptive (the default), the limit follows loss-based AIMD, as TCP's
congestion window and Netflix's `AIMDLimit` do: it shrinks by a tenth when an attempt times
out or gets a 429 or 503, and grows by one slot per limit's worth of successes while the limit
is nearly used. No latency-gradient algorithm: their bug trails are long (concurrency-limits
#134, #137, #146), loss is the signal an overloaded upstream gives for sure.

Decreases are paced as in TCP: only an attempt admitted since the last decrease may shrink the
limit again, so a burst of 503s from one overload shrinks it once, not thirty times.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import httpx

from .._pipeline.attempts import Call, Outcome
from .._pipeline.checks import first_problem, is_count, is_seconds
from .._pipeline.strategy import Refusal
from ..exceptions import ThrottledError

__all__ = ["ConcurrencyGate", "ConcurrencyLimit", "is_drop"]

#: Attempts in flight at first (and always, when not adaptive): Netflix's initial limit.
DEFAULT_CONCURRENCY: Final = 20
#: Seconds an attempt waits for a slot at most, by default: a burst a little over the limit
#: waits a moment rather than failing; never past the call's deadline.
DEFAULT_MAX_WAIT: Final = 0.25
#: The adaptive limit's bounds, by default (Netflix's `AIMDLimit` stops at 200 too).
DEFAULT_MIN_LIMIT: Final = 1
DEFAULT_MAX_LIMIT: Final = 200
#: The multiplicative decrease (Netflix moved from 0.5, too aggressive, to 0.9: issue #137).
BACKOFF: Final = 0.9
#: "Nearly used": the share of the limit in flight above which a success grows it.
NEARLY_USED: Final = 0.75
#: Statuses that say "overloaded": the limit shrinks.
DROP_STATUSES: Final = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """
    At most `limit` attempts of the client in flight at once; adaptive by default.

    Off unless given (`Client(concurrency=ConcurrencyLimit())` or
    `ClientSettings.concurrency`). Every attempt (first, retries, hedges) takes a slot for as
    long as it is in flight; when none is free it waits up to `max_wait` (never past the
    call's deadline), first come first served. A first attempt still waiting then raises
    [`ThrottledError`][fastapi_retry_http.exceptions.ThrottledError]
    (`reason="concurrency"`); a retry is not sent and the call returns its last outcome.

    Adaptive, the limit shrinks to 0.9 of itself on an attempt that timed out or got a 429 or
    503 (once per round of attempts), and grows by `1/limit` on each success while at least
    three quarters of it is in use, between `min_limit` and `max_limit`. The limit is per
    process: it follows what this process sees.

    Attributes:
        limit: Attempts in flight at most; adaptive, where the limit starts.
        adaptive: Follow the upstream's signals (AIMD); `False` keeps `limit` fixed.
        max_wait: Seconds an attempt may wait for a slot (0: refuse at once when full).
        min_limit: The adaptive limit's floor.
        max_limit: The adaptive limit's ceiling.
    """

    limit: int = DEFAULT_CONCURRENCY
    adaptive: bool = True
    max_wait: float = DEFAULT_MAX_WAIT
    min_limit: int = DEFAULT_MIN_LIMIT
    max_limit: int = DEFAULT_MAX_LIMIT

    def __post_init__(self) -> None:
        problem = first_problem(
            [
                ("limit", is_count(self.limit, 1), "must be an integer of at least 1"),
                ("max_wait", is_seconds(self.max_wait, zero=True), "must be a number of seconds, zero or more"),
                ("min_limit", is_count(self.min_limit, 1), "must be an integer of at least 1"),
                ("max_limit", is_count(self.max_limit, 1), "must be an integer of at least 1"),
                ("limit", self.min_limit <= self.limit <= self.max_limit, "must be between min_limit and max_limit"),
            ]
        )
        if problem is not None:
            raise ValueError(f"ConcurrencyLimit.{problem}")


def is_drop(outcome: Outcome) -> bool | None:
    """`True`: a timeout, 429 or 503 (shrink); `False`: a success (may grow); `None`: neither."""
    if outcome.response is not None:
        status = outcome.response.status_code
        return True if status in DROP_STATUSES else (False if status < 500 else None)
    error = outcome.error
    # A pool timeout is this process's own back-pressure, not the upstream's.
    return True if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.PoolTimeout) else None


class _Held:
    """What one call holds: slots (with the decrease epoch each was taken in), waiters, deferrals."""

    __slots__ = ("deferred", "epochs", "waiters")

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.deferred = 0


class ConcurrencyGate:
    """The limit as a strategy: a slot per attempt in flight, a queue of waiters, AIMD."""

    def __init__(
        self,
        config: ConcurrencyLimit,
        client: str,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.config = config
        self._client = client
        self._clock = clock
        self._sleep = sleep
        self._limit, self._current = 0.0, 0
        self.limit = float(config.limit)
        self.in_flight = 0
        self._queue: deque[tuple[asyncio.Future[None], _Held]] = deque()
        #: Decreases so far: an attempt taken before the last one cannot shrink the limit again.
        self._epoch = 0

    @property
    def limit(self) -> float:
        """The limit in force, fractional (additive increase adds 1/limit per success)."""
        return self._limit

    @limit.setter
    def limit(self, limit: float) -> None:
        self._limit = limit
        self._current = math.floor(limit)  # read by every admit: kept, not computed

    @property
    def current(self) -> int:
        """The limit in force, in whole attempts."""
        return self._current

    def admit(self, call: Call) -> Refusal | Awaitable[Refusal | None] | None:
        """A free slot now; else wait for one (a retry always takes its slot after its backoff)."""
        if call.attempt == 0 or call.policy.hedge_after is not None:
            if self.in_flight < self._current and not self._queue:
                # The call keeps the slot's epoch alone, a number, unless it holds more.
                state = call.state
                if state is None:
                    call.state = {self: self._epoch}
                elif self not in state:
                    state[self] = self._epoch
                else:
                    self._take(self._held(call))
                    return None
                self.in_flight += 1
                return None
            if self.config.max_wait == 0:
                return self._refusal()
        held = self._held(call)
        held.deferred += 1
        return self._acquire(call, held)

    async def _acquire(self, call: Call, held: _Held) -> Refusal | None:
        held.deferred -= 1
        if self.in_flight < self._current and not self._queue:
            self._take(held)
            return None
        wait = self.config.max_wait
        if call.deadline_at is not None:
            wait = min(wait, call.deadline_at - self._clock())
        if wait <= 0:
            return self._refusal()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (waiter, held)
        self._queue.append(entry)
        held.waiters.append(waiter)
        timer = asyncio.ensure_future(self._sleep(wait))
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer.done() and not timer.cancelled():
                timer.exception()  # the client closed during the wait: the refusal says enough
            timer.cancel()
        if waiter.done():
            return None  # granted: the slot is the call's already
        # Out of time (or the client closed during the wait): leave the queue, refuse.
        self._queue.remove(entry)
        held.waiters.remove(waiter)
        waiter.cancel()
        return self._refusal()

    def record(self, call: Call, outcome: Outcome) -> None:
        """Give the attempt's slot back (or its place in the queue), and adapt the limit."""
        state = call.state
        held = state.get(self) if state is not None else None
        if type(held) is int:  # the one slot of a call that took it at once: nearly every call
            del state[self]  # type: ignore[union-attr]
            epoch: int = held
        else:
            held = self._held(call)
            if outcome.cancelled and held.waiters:
                waiter = held.waiters.pop()  # cancelled while waiting: leave the queue
                self._queue.remove((waiter, held))
                waiter.cancel()
                return
            if not held.epochs:
                if held.deferred:  # admitted for after a backoff that never ended
                    held.deferred -= 1
                return
            epoch = held.epochs.pop()
        in_use = self.in_flight
        self.in_flight = in_use - 1
        if self.config.adaptive and not outcome.cancelled and outcome.refusal is None:
            self._adapt(is_drop(outcome), epoch, in_use)
        if self._queue:
            self._grant()

    def status(self) -> dict[str, object]:
        """The limit's state now, for the dashboard (JSON-able)."""
        config = self.config
        return {
            "limit": self.current,
            "in_flight": self.in_flight,
            "waiting": len(self._queue),
            "adaptive": config.adaptive,
            "min_limit": config.min_limit,
            "max_limit": config.max_limit,
            "max_wait": config.max_wait,
        }

    def _adapt(self, drop: bool | None, epoch: int, in_use: int) -> None:
        config = self.config
        if drop:
            if epoch == self._epoch:  # once per round: attempts sent before it do not count
                self.limit = max(float(config.min_limit), self._limit * BACKOFF)
                self._epoch += 1
        elif drop is False and in_use >= NEARLY_USED * self._current and self._limit < config.max_limit:
            # Against the whole limit in force: with a fractional 1.9, one in flight is all of it.
            self.limit = min(float(config.max_limit), self._limit + 1 / self._limit)

    def _take(self, held: _Held) -> None:
        self.in_flight += 1
        held.epochs.append(self._epoch)

    def _grant(self) -> None:
        """Hand free slots to the waiters, first come first served."""
        queue = self._queue
        while queue and self.in_flight < self._current:
            waiter, held = queue.popleft()
            held.waiters.remove(waiter)
            waiter.set_result(None)
            self._take(held)

    def _held(self, call: Call) -> _Held:
        state = call.state
        if state is None:
            state = call.state = {}
        held = state.get(self)
        if not isinstance(held, _Held):
            slot = held
            held = state[self] = _Held()
            if type(slot) is int:  # the one slot taken at once: kept with the others now
                held.epochs.append(slot)
        return held

    def _refusal(self) -> Refusal:
        message = (
            f"Client {self._client!r}: concurrency limit of {self.current} reached; "
            f"no slot within {self.config.max_wait:g}s."
        )
        return Refusal("concurrency", ThrottledError(message, client=self._client, reason="concurrency"))
