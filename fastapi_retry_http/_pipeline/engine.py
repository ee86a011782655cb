"""
tenacity, behind one door: it drives the attempts after a retryable first one.

Building a tenacity `AsyncRetrying` costs 65-100 us per call even when nothing is retried,
so the pipeline runs the first attempt itself; only a retryable first outcome comes here.
tenacity is handed that outcome (nothing is sent again for it) and runs the waits and the
stop rules given by the pipeline's `Rules`. Attempts return `Outcome`s and never raise, so
tenacity never wraps anything: the caller gets the last outcome, never a `RetryError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState

from .attempts import Outcome

__all__ = ["Rules", "retry"]


class Rules(Protocol):
    """The pipeline's answers to tenacity's questions, for one call."""

    def wait(self, outcome: Outcome) -> float:
        """Seconds before the next attempt after `outcome`; `math.inf` stops the call now."""

    def stop(self, outcome: Outcome, wait: float) -> str | None:
        """Why the call stops instead of waiting `wait` after `outcome`, or `None` to go on."""

    async def before_wait(self, outcome: Outcome, wait: float) -> None:
        """The next attempt is `wait` seconds away: release `outcome`, log, tell the instruments."""

    def gave_up(self, outcome: Outcome, reason: str) -> None:
        """`outcome` is final although retryable, because of `reason`."""


async def retry(
    first: Outcome,
    attempt: Callable[[], Awaitable[Outcome]],
    rules: Rules,
    sleep: Callable[[float], Awaitable[None]],
) -> Outcome:
    """Run attempts after `first` until one is not retryable or `rules` stop; the last outcome."""
    pending = [first]
    stopped: list[str] = []

    async def next_outcome() -> Outcome:
        return pending.pop() if pending else await attempt()

    def wait(state: RetryCallState) -> float:
        return rules.wait(_outcome(state))

    def stop(state: RetryCallState) -> bool:
        reason = rules.stop(_outcome(state), state.upcoming_sleep)
        if reason is not None:
            stopped.append(reason)
        return reason is not None

    async def before_sleep(state: RetryCallState) -> None:
        await rules.before_wait(_outcome(state), state.upcoming_sleep)

    def last(state: RetryCallState) -> Outcome:
        outcome = _outcome(state)
        rules.gave_up(outcome, stopped[-1])
        return outcome

    retrying = AsyncRetrying(
        sleep=sleep,
        retry=lambda state: _outcome(state).retryable,
        wait=wait,
        stop=stop,
        before_sleep=before_sleep,
        retry_error_callback=last,
    )
    outcome: Outcome = await retrying(next_outcome)
    return outcome


def _outcome(state: RetryCallState) -> Outcome:
    assert state.outcome is not None
    result: Outcome = state.outcome.result()
    return result
