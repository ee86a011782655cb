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
import time
from collections.abc import Coroutine
from contextvars import Context, copy_context
from inspect import CORO_CREATED, getcoroutinestate
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from .._tasks import task_of
from .attempts import Call, Outcome
from .deadlines import Expiries
from .strategy import Refusal

if TYPE_CHECKING:
    from .admission import Waiting

__all__ = ["Pace", "Race", "hedge_timers"]

#: How early the event loop may run a timer (asyncio's own allowance).
_RESOLUTION = time.get_clock_info("monotonic").resolution


class Pace(Protocol):
    """A hedged call's delay (fixed or learned), and the hedge budget its hedges on time draw on."""

    delay: float | None  # `None`: no hedge on time (still learning); a failure still starts one

    def deposit(self) -> None:
        """A hedged call starts: it pays its share into the hedge budget."""

    def take(self) -> bool:
        """A hedge is due on time: whether the hedge budget allows it."""


class Attempts(Protocol):
    """What a race asks of the executor: admit an attempt, run it, release one not returned, answer."""

    def admit(self, call: Call, start: int = 0) -> Refusal | Waiting | None:
        """Whether another attempt of `call` may go (or a wait for it)."""

    async def admitted(self, call: Call, admission: Refusal | Waiting) -> None:
        """The first attempt's admission, when not a plain yes: wait, or raise the refusal's error."""

    async def attempt(self, call: Call) -> Outcome:
        """One attempt; `call.lost()` tells it, once cancelled, whether it lost the race."""

    def unsent(self, call: Call) -> None:
        """An admitted attempt cancelled before it started: what the strategies admitted goes back."""

    async def superseded(self, call: Call, outcome: Outcome, kind: str) -> None:
        """Release an attempt's outcome that will not be returned, and tell of it."""

    def final(self, call: Call, outcome: Outcome, stopped: str | None = None) -> None:
        """The event of the attempt that ends the call."""

    def returned(self, call: Call, outcome: Outcome, stopped: str | None = None) -> httpx.Response:
        """The call's answer from its last outcome (and why hedging stopped early, if it did)."""


def hedge_timers() -> Expiries[Race]:
    """The timers of a transport's hedged calls: one event-loop timer behind them all."""
    return Expiries(Race.due, early=_RESOLUTION)  # never a hedge before its delay


class Race(Call):
    """
    A hedged call: the `Call` with its attempts in flight and done; `run()` is the call.

    One object per call, built as the call is (with `Call`'s fields alone, not a call and a
    race): most calls are answered before the hedge delay. The first attempt runs in the
    caller's own task, and then costs no task, no future and no timer of its own (a deadline
    in the transport's shared `Expiries`, keyed by the race). When the delay passes first,
    `due` starts a hedge as a task; a hedge that wins while the first attempt still runs
    interrupts it by cancelling the caller's task, which `run` tells from any other
    cancellation. From then on (or after a first attempt that failed) the remaining attempts
    are tasks, raced by `_rest`.

    `run`'s `attempts` (the executor) admits and runs each attempt, and releases an outcome
    that will not be returned with its one event: `"retry"` for a failure that another
    attempt followed, `"hedge_lost"` for an answer that came after the winner's. So every
    attempt sent has exactly one event, as a retried call's attempts have. `pace` gives the
    delay (the policy's seconds, or a learned percentile, read as the call starts) and the
    hedge budget. `timers` (`hedge_timers()`, one per transport) times the hedges due while
    the first attempt runs.
    """

    # What most races never change is read from the class until they do (cheaper to build).
    #: Hedges running as tasks (`None` until the first one).
    running: set[asyncio.Task[Outcome]] | None = None
    #: Hedges admitted on condition of a wait (a rate limit's slot), not started yet.
    waits: list[Waiting] | None = None
    #: The attempts of the hedges admitted at once (told if cancelled before they start).
    at_once: list[Coroutine[Any, Any, Outcome]] | None = None
    #: A winner is known: attempts cancelled from now on lost the race.
    decided = False
    stopped: str | None = None
    last: Outcome | None = None
    launched = 1  # the first attempt
    #: The caller's task, while the first attempt runs in it.
    inline: asyncio.Task[Any] | None = None
    interrupted = False

    # Set as the call runs (an `__init__` of its own would cost a frame more per call).
    attempts: Attempts
    pace: Pace
    timers: Expiries[Race]
    delay: float | None
    context: Context

    # A key of the timers: by identity, as any object (a call's fields are no key).
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    def _more(self) -> bool:
        return self.launched < self.policy.attempts and self.stopped is None

    async def run(self, attempts: Attempts, pace: Pace, timers: Expiries[Race]) -> httpx.Response:
        """The call: its first attempt admitted, the race, the answer (the winner, or the last failure)."""
        self.attempts, self.pace, self.timers = attempts, pace, timers
        delay = self.delay = pace.delay
        pace.deposit()
        # Hedges started by a timer run in the caller's context, not the timer's.
        self.context = copy_context()
        admission = attempts.admit(self)
        if admission is not None:
            await attempts.admitted(self, admission)
        loop = asyncio.get_running_loop()
        caller = task_of(loop)
        assert caller is not None
        try:
            if delay is not None:  # hedging needs two attempts or more: another may go
                timers.set(self, delay, loop)
            self.inline = caller
            try:
                # An attempt never absorbs a cancellation (the executor re-raises it; the sender
                # turns one into a timeout only when its own deadline was the only one).
                first = await attempts.attempt(self)
            except asyncio.CancelledError:
                if not self.interrupted or caller.uncancel() != 0:
                    raise
                first = None  # a hedge won: the caller's task was cancelled for that, and by nobody else
            finally:
                self.inline = None
                timers.discard(self, None)
            if first is not None and not first.retryable and not self.running:
                # Answered before any hedge, nearly every call: as a call answered at once is.
                attempts.final(self, first)
                return first.unwrap()
            outcome, stopped = await self._rest(first)
        finally:
            if self.running or self.waits:
                await self._end()
        return attempts.returned(self, outcome, stopped)

    async def _rest(self, first: Outcome | None) -> tuple[Outcome, str | None]:
        """The race after the first attempt: hedges as tasks, until a winner or no attempt left."""
        outcomes = [] if first is None else [first]
        timed_out = False
        running = self.running = self.running or set()
        while True:
            done = {task for task in running if task.done()}
            running.difference_update(done)
            outcomes.extend(task.result() for task in done)
            winner = await self._collect(outcomes)
            if winner is not None:
                self.decided = True  # the attempts still running lost the race
                return winner, None
            if self._more() and (timed_out or not running):
                # The delay passed with no answer, or every attempt failed: the next hedge.
                self._next(on_time=timed_out)
            if not running:
                break
            timed_out = not await self._first(running, self.delay if self._more() else None)
            outcomes = []
        assert self.last is not None
        return self.last, self.stopped

    async def _end(self) -> None:
        """The attempts still running lost (or the caller left): cancelled and awaited."""
        running = self.running or ()
        # A hedge whose task took no step yet never runs its attempt once cancelled: given back.
        unsent = [attempt for attempt in self.at_once or () if getcoroutinestate(attempt) == CORO_CREATED]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for pending in self.waits or ():
            if not pending.started:  # its task was cancelled before it ran: the slot goes back
                pending.abandon()
        for _ in unsent:
            self.attempts.unsent(self)

    def due(self) -> None:
        """The hedge delay passed while the first attempt runs: a hedge, and the next one timed."""
        # Set only while the first attempt runs and another attempt may go; discarded after.
        assert self.inline is not None
        self._next(on_time=True)
        if self.delay is not None and self._more():
            self.timers.set(self, self.delay, self.inline.get_loop())

    def _next(self, *, on_time: bool) -> None:
        """Start the next hedge, if the hedge budget (for one on time) and the strategies allow it."""
        if on_time and not self.pace.take():
            self.delay = None  # the hedge budget is spent: no more hedges on time for this call
            return
        admission = self.attempts.admit(self)
        if isinstance(admission, Refusal):
            self.stopped = admission.reason
        else:
            self._launch(admission)

    def _launch(self, pending: Waiting | None) -> None:
        if pending is None:
            attempt = self.attempts.attempt(self)
            self.at_once = [*(self.at_once or ()), attempt]
        else:
            attempt = self._after(pending)
            self.waits = [*(self.waits or ()), pending]
        task = asyncio.get_running_loop().create_task(attempt, context=self.context)
        if self.inline is not None:
            task.add_done_callback(self._settled)
        if self.running is None:
            self.running = set()
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

    def lost(self) -> bool:
        """Whether a winner is known: an attempt cancelled now lost the race."""
        return self.decided

    async def _first(self, running: set[asyncio.Task[Outcome]], timeout: float | None) -> bool:
        """
        Wait until an attempt is done (`True`), or until `timeout` passed (`False`):
        `asyncio.wait(..., FIRST_COMPLETED)` without its copies and checks.
        """
        waiter = asyncio.get_running_loop().create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

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
            return Outcome(refusal=refusal, attempt=self.attempt)
        return await self.attempts.attempt(self)

    async def _collect(self, outcomes: list[Outcome]) -> Outcome | None:
        """The winner among `outcomes`, if any; every other outcome superseded or kept as the last."""
        winner = None
        for outcome in outcomes:
            if outcome.refusal is not None:
                self.stopped = outcome.refusal.reason  # a hedge that waited for a slot, then refused
            elif winner is None and not outcome.retryable:
                winner = outcome
            elif not outcome.retryable:
                await self.attempts.superseded(self, outcome, "hedge_lost")  # answered with the winner, too late
            else:
                if self.last is not None:
                    await self.attempts.superseded(self, self.last, "retry")
                self.last = outcome
        if winner is not None and self.last is not None:
            await self.attempts.superseded(self, self.last, "retry")
        return winner
