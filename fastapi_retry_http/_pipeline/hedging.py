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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from .attempts import Call, Outcome
from .strategy import Refusal

if TYPE_CHECKING:
    from .admission import Waiting

__all__ = ["Pace", "race"]

Attempt = Callable[[Callable[[], bool]], Awaitable[Outcome]]


class Pace(Protocol):
    """A hedged call's delay (fixed or learned), and the hedge budget its hedges on time draw on."""

    delay: float | None  # `None`: no hedge on time (still learning); a failure still starts one

    def take(self) -> bool:
        """A hedge is due on time: whether the hedge budget allows it."""


async def race(
    call: Call,
    attempt: Attempt,
    admit: Callable[[], Refusal | Waiting | None],
    superseded: Callable[[Outcome, str], Awaitable[None]],
    pace: Pace | None = None,
) -> tuple[Outcome, str | None]:
    """
    Run hedged attempts of `call`: the winner (or the last failure), and why hedging stopped
    early (a strategy's refusal), if it did.

    `attempt(lost)` runs one attempt; `lost()` tells it, once cancelled, whether it lost the
    race (rather than the caller going away). `superseded(outcome, kind)` releases an attempt's
    outcome that will not be returned and tells of it: `"retry"` for a failure that another
    attempt followed, `"hedge_lost"` for an answer that came after the winner's. So every
    attempt sent has exactly one event, as a retried call's attempts have. `pace` gives the
    delay (the policy's seconds, or a learned percentile) and the hedge budget; without it,
    the policy's seconds, unbudgeted.
    """
    return await _Race(call, attempt, admit, superseded, pace).run()


class _Race:
    """The hedged attempts of one call, in flight and done."""

    __slots__ = (
        "_admit",
        "_attempt",
        "_pace",
        "_pending",
        "_superseded",
        "call",
        "decided",
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
    ) -> None:
        self.call, self._attempt, self._admit, self._superseded = call, attempt, admit, superseded
        self._pace = pace
        self._pending: list[Waiting] = []  # hedges admitted on condition of a wait
        self.running: set[asyncio.Task[Outcome]] = set()
        self.decided = False  # a winner is known: attempts cancelled from now on lost the race
        self.stopped: str | None = None
        self.last: Outcome | None = None
        self.launched = 0

    async def run(self) -> tuple[Outcome, str | None]:
        pace = self._pace
        delay = pace.delay if pace is not None else self.call.policy.hedge_after
        assert not isinstance(delay, str)
        attempts = self.call.policy.attempts
        self._launch(None)
        try:
            while self.running:
                more = self.launched < attempts and self.stopped is None
                done = await self._first(delay if more else None)
                self.running.difference_update(done)
                winner = await self._collect(done)
                if winner is not None:
                    return winner, None
                if more and (not done or not self.running):
                    # The delay passed with no answer, or every attempt failed: the next hedge.
                    if not done and pace is not None and not pace.take():
                        delay = None  # the hedge budget is spent: no more hedges on time for this call
                        continue
                    admission = self._admit()
                    if isinstance(admission, Refusal):
                        self.stopped = admission.reason
                    else:
                        self._launch(admission)
            assert self.last is not None
            return self.last, self.stopped
        finally:
            self.decided = True
            if self.running:  # most calls: none left, and nothing to wait for
                for task in self.running:
                    task.cancel()
                await asyncio.gather(*self.running, return_exceptions=True)
            for pending in self._pending:
                if not pending.started:  # its task was cancelled before it ran: the slot goes back
                    pending.abandon()

    async def _first(self, timeout: float | None) -> set[asyncio.Task[Outcome]]:
        """
        The attempts done once the first is, or once `timeout` passed: `asyncio.wait(...,
        FIRST_COMPLETED)` without its copies and checks (a hedged call waits once or twice).
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
        return {task for task in running if task.done()}

    def _launch(self, pending: Waiting | None) -> None:
        if pending is not None:
            self._pending.append(pending)
        attempt = self._attempt(self._lost) if pending is None else self._after(pending)
        self.running.add(asyncio.ensure_future(attempt))
        self.launched += 1

    def _lost(self) -> bool:
        return self.decided

    async def _after(self, pending: Waiting) -> Outcome:
        """A hedge admitted on condition of a wait (a rate limit's slot)."""
        refusal = await pending.wait()
        if refusal is not None:
            return Outcome(refusal=refusal, attempt=self.call.attempt)
        return await self._attempt(self._lost)

    async def _collect(self, done: set[asyncio.Task[Outcome]]) -> Outcome | None:
        """The winner among `done`, if any; every other outcome superseded or kept as the last."""
        winner = None
        for task in done:
            outcome = task.result()
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
