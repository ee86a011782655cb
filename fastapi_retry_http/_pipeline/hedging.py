"""
Hedged requests: an idempotent request still unanswered after `hedge_after` gets another
attempt in parallel, up to `attempts` in flight; the first acceptable outcome wins.

As in gRPC's A6 and "The Tail at Scale": hedging replaces retrying for the call (no retries
after the hedges), a retryable failure starts the next hedge at once, every hedge is
admitted by the gates (the retry budget pays for it; none while the breaker is open), and
the losers are cancelled and awaited, so their connections go back to the pool or are closed.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from .attempts import Call, Outcome
from .deadlines import Expiries
from .strategy import Refusal

if TYPE_CHECKING:
    from .admission import Waiting

__all__ = ["Pace", "hedge_timers", "race"]

#: How early the event loop may run a timer (asyncio's own allowance).
_RESOLUTION = time.get_clock_info("monotonic").resolution

Attempt = Callable[[Callable[[], bool]], Coroutine[Any, Any, Outcome]]


class Pace(Protocol):
    """A hedged call's delay (fixed or learned), and the hedge budget its hedges on time draw on."""

    delay: float | None  # `None`: no hedge on time (still learning); a failure still starts one

    def take(self) -> bool:
        """A hedge is due on time: whether the hedge budget allows it."""


def race(
    call: Call,
    attempt: Attempt,
    admit: Callable[[], Refusal | Waiting | None],
    superseded: Callable[[Outcome, str], Awaitable[None]],
    pace: Pace | None,
    timers: Expiries[_Race],
) -> Coroutine[Any, Any, tuple[Outcome, str | None]]:
    """
    Run hedged attempts of `call`: the winner (or the last failure), and why hedging stopped
    early (a strategy's refusal), if it did.

    `attempt(lost)` runs one attempt; `lost()` tells it, once cancelled, whether it lost the
    race (rather than the caller going away). `superseded(outcome, kind)` releases an attempt's
    outcome that will not be returned and tells of it: `"retry"` for a failure that another
    attempt followed, `"hedge_lost"` for an answer that came after the winner's. So every
    attempt sent has exactly one event, as a retried call's attempts have. `pace` gives the
    delay (the policy's seconds, or a learned percentile) and the hedge budget; without it,
    the policy's seconds, unbudgeted. `timers` (`hedge_timers()`, one per transport) times the
    hedges due while the first attempt runs.
    """
    return _Race(call, attempt, admit, superseded, pace, timers).run()


def hedge_timers() -> Expiries[_Race]:
    """The timers of a transport's hedged calls: one event-loop timer behind them all."""
    return Expiries(_Race.due, early=_RESOLUTION)  # never a hedge before its delay


class _Race:
    """
    The hedged attempts of one call, in flight and done.

    The first attempt runs in the caller's own task: most calls are answered before the hedge
    delay, and then cost no task, no future and no timer of their own (a deadline in the
    transport's shared `Expiries`). When the delay passes first, `due` starts a hedge as a
    task; a hedge that wins while the first attempt still runs interrupts it by cancelling the
    caller's task, which `_inline` tells from any other cancellation. From then on (or after a
    first attempt that failed) the remaining attempts are tasks, raced by `run`.
    """

    __slots__ = (
        "_admit",
        "_attempt",
        "_context",
        "_pace",
        "_pending",
        "_superseded",
        "_timers",
        "call",
        "decided",
        "delay",
        "inline",
        "interrupted",
        "last",
        "launched",
        "running",
        "stopped",
    )

    def __init__(
        self,
        call: Call,
        attempt: Attempt,
        admit: Callable[[], Refusal | Waiting | None],
        superseded: Callable[[Outcome, str], Awaitable[None]],
        pace: Pace | None,
        timers: Expiries[_Race],
    ) -> None:
        self.call, self._attempt, self._admit, self._superseded = call, attempt, admit, superseded
        self._pace, self._timers = pace, timers
        delay = pace.delay if pace is not None else call.policy.hedge_after
        assert not isinstance(delay, str)
        self.delay = delay
        self._pending: list[Waiting] = []  # hedges admitted on condition of a wait
        self.running: set[asyncio.Task[Outcome]] = set()
        self.decided = False  # a winner is known: attempts cancelled from now on lost the race
        self.stopped: str | None = None
        self.last: Outcome | None = None
        self.launched = 0
        self.inline: asyncio.Task[Any] | None = None  # the caller's task, while the first attempt runs in it
        self.interrupted = False
        # Hedges started by a timer run in the call's context, not the timer's.
        self._context = contextvars.copy_context()

    def _more(self) -> bool:
        return self.launched < self.call.policy.attempts and self.stopped is None

    async def run(self) -> tuple[Outcome, str | None]:
        try:
            first = await self._inline()
            outcomes = [] if first is None else [first]
            timed_out = False
            while True:
                done = {task for task in self.running if task.done()}
                self.running.difference_update(done)
                outcomes.extend(task.result() for task in done)
                winner = await self._collect(outcomes)
                if winner is not None:
                    self.decided = True  # the attempts still running lost the race
                    return winner, None
                if self._more() and (timed_out or not self.running):
                    # The delay passed with no answer, or every attempt failed: the next hedge.
                    self._next(on_time=timed_out)
                if not self.running:
                    break
                timed_out = not await self._first(self.delay if self._more() else None)
                outcomes = []
            assert self.last is not None
            return self.last, self.stopped
        finally:
            if self.running:  # most calls: none left, and nothing to wait for
                for task in self.running:
                    task.cancel()
                await asyncio.gather(*self.running, return_exceptions=True)
            for pending in self._pending:
                if not pending.started:  # its task was cancelled before it ran: the slot goes back
                    pending.abandon()

    async def _inline(self) -> Outcome | None:
        """The first attempt, in the caller's task; `None` if a hedge won while it ran."""
        caller = asyncio.current_task()
        assert caller is not None
        self.launched = 1
        if self.delay is not None and self._more():
            self._timers.set(self, self.delay, caller.get_loop())
        self.inline = caller
        try:
            # An attempt never absorbs a cancellation (the executor re-raises it; the sender
            # turns one into a timeout only when its own deadline was the only one).
            return await self._attempt(self._lost)
        except asyncio.CancelledError:
            if self.interrupted and caller.uncancel() == 0:
                return None  # a hedge won: the caller's task was cancelled for that, and by nobody else
            raise
        finally:
            self.inline = None
            self._timers.discard(self)

    def due(self) -> None:
        """The hedge delay passed while the first attempt runs: a hedge, and the next one timed."""
        # Set only while the first attempt runs and another attempt may go; discarded after.
        assert self.inline is not None
        self._next(on_time=True)
        if self.delay is not None and self._more():
            self._timers.set(self, self.delay, self.inline.get_loop())

    def _next(self, *, on_time: bool) -> None:
        """Start the next hedge, if the hedge budget (for one on time) and the strategies allow it."""
        if on_time and self._pace is not None and not self._pace.take():
            self.delay = None  # the hedge budget is spent: no more hedges on time for this call
            return
        admission = self._admit()
        if isinstance(admission, Refusal):
            self.stopped = admission.reason
        else:
            self._launch(admission)

    def _launch(self, pending: Waiting | None) -> None:
        if pending is not None:
            self._pending.append(pending)
        attempt = self._attempt(self._lost) if pending is None else self._after(pending)
        task = asyncio.get_running_loop().create_task(attempt, context=self._context)
        if self.inline is not None:
            task.add_done_callback(self._settled)
        self.running.add(task)
        self.launched += 1

    def _settled(self, task: asyncio.Task[Outcome]) -> None:
        """A hedge ended while the first attempt runs: if it won (or raised), the first one stops."""
        if self.inline is None or self.interrupted or task.cancelled():
            return
        error = task.exception()
        outcome = None if error is not None else task.result()
        if outcome is None or (outcome.refusal is None and not outcome.retryable):
            self.decided = outcome is not None
            self.interrupted = True
            self.inline.cancel()

    def _lost(self) -> bool:
        return self.decided

    async def _first(self, timeout: float | None) -> bool:
        """
        Wait until an attempt is done (`True`), or until `timeout` passed (`False`):
        `asyncio.wait(..., FIRST_COMPLETED)` without its copies and checks.
        """
        waiter = asyncio.get_running_loop().create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        running = self.running
        for task in running:
            task.add_done_callback(wake)
        timer = None if timeout is None else waiter.get_loop().call_later(timeout, wake)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            for task in running:
                task.remove_done_callback(wake)
        return any(task.done() for task in running)

    async def _after(self, pending: Waiting) -> Outcome:
        """A hedge admitted on condition of a wait (a rate limit's slot)."""
        refusal = await pending.wait()
        if refusal is not None:
            return Outcome(refusal=refusal, attempt=self.call.attempt)
        return await self._attempt(self._lost)

    async def _collect(self, outcomes: list[Outcome]) -> Outcome | None:
        """The winner among `outcomes`, if any; every other outcome superseded or kept as the last."""
        winner = None
        for outcome in outcomes:
            if outcome.refusal is not None:
                self.stopped = outcome.refusal.reason  # a hedge that waited for a slot, then refused
            elif winner is None and not outcome.retryable:
                winner = outcome
            elif not outcome.retryable:
                await self._superseded(outcome, "hedge_lost")  # answered with the winner, too late
            else:
                if self.last is not None:
                    await self._superseded(self.last, "retry")
                self.last = outcome
        if winner is not None and self.last is not None:
            await self._superseded(self.last, "retry")
        return winner
