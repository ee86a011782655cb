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
from .send import discard
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
    call: Call, attempt: Attempt, admit: Callable[[], Refusal | Waiting | None], pace: Pace | None = None
) -> tuple[Outcome, str | None]:
    """
    Run hedged attempts of `call`: the winner (or the last failure), and why hedging stopped
    early (a gate's refusal), if it did.

    `attempt(lost)` runs one attempt; `lost()` tells it, once cancelled, whether it lost the
    race (rather than the caller going away). `pace` gives the delay (the policy's seconds,
    or a learned percentile) and the hedge budget; without it, the policy's seconds, unbudgeted.
    """
    delay = pace.delay if pace is not None else call.policy.hedge_after
    assert not isinstance(delay, str)
    running: set[asyncio.Task[Outcome]] = set()
    decided = False
    stopped: str | None = None
    last: Outcome | None = None

    def launch(pending: Waiting | None = None) -> None:
        running.add(asyncio.ensure_future(attempt(lambda: decided) if pending is None else after(pending)))

    async def after(pending: Waiting) -> Outcome:
        refusal = await pending.wait()
        if refusal is not None:
            return Outcome(refusal=refusal, attempt=call.attempt)
        return await attempt(lambda: decided)

    launch()
    launched = 1
    try:
        while running:
            more = launched < call.policy.attempts and stopped is None
            done, _ = await asyncio.wait(running, timeout=delay if more else None, return_when=asyncio.FIRST_COMPLETED)
            running.difference_update(done)
            winner = None
            for task in done:
                outcome = task.result()
                if outcome.refusal is not None:
                    stopped = outcome.refusal.reason  # a hedge that waited for a slot, then refused
                    continue
                if winner is None and not outcome.retryable:
                    winner = outcome
                    continue
                if outcome.response is not None:
                    await discard(outcome.response)
                last = outcome
            if winner is not None:
                return winner, None
            if more and (not done or not running):
                # The delay passed with no answer, or every attempt failed: the next hedge.
                if not done and pace is not None and not pace.take():
                    delay = None  # the hedge budget is spent: no more hedges on time for this call
                    continue
                refusal = admit()
                if isinstance(refusal, Refusal):
                    stopped = refusal.reason
                else:
                    launch(refusal)
                    launched += 1
        assert last is not None
        return last, stopped
    finally:
        decided = True
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
