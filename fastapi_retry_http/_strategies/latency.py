"""
Learned hedging: the hedge delay is a percentile of the client's recent attempt durations,
and a hedge budget keeps the extra load within a share of the calls.

As Finagle's BackupRequestFilter does: a windowed histogram, read every few seconds (never per
request), fed by successes and timeouts only (a fast failure says nothing about how long an
answer takes, and would pull the delay down), and every hedge sent on time withdraws from a
budget that each hedged call pays into. A percentile keeps hedges near its share only while
latency holds still; when every response turns slow at once, the delay lags behind and every
call would hedge: the budget is what keeps an outage from doubling the load.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import httpx

from .._pipeline.attempts import Call, Outcome
from .._pipeline.policy import percentile_of
from .latency_window import FRESH, MIN_SAMPLES, LatencyWindow

__all__ = ["HedgeBudget", "HedgePacer", "LatencyStrategy"]

#: Seconds between two readings of the percentile (Finagle: 3 s); between them the delay holds.
REFRESH: Final = 3.0
#: The shortest hedge delay, whatever the percentile (Finagle's floor: 1 ms).
MIN_DELAY: Final = 0.001
#: The hedge budget per call is the percentile's share times this: p95 allows 6% extra
#: requests. Exactly the share would run dry half the time (demand and supply balance), and
#: refuse the hedges of the very calls that are slow.
BUDGET_SLACK: Final = 1.2
#: Hedges the budget can hold in reserve (and starts with): a burst beyond the share.
BUDGET_BURST: Final = 20.0
#: The hedge budget per call for a fixed `hedge_after` (seconds): twice the Tail at Scale's 5%.
FIXED_SHARE: Final = 0.1


class HedgeBudget:
    """
    A token bucket for hedges: each hedged call deposits `share` as it starts, each hedge
    sent on time withdraws one; it holds at most `burst`, and starts full. Over any run of
    calls, the hedges sent on time number at most `burst + share * calls`.

    It is also the pace of the calls hedged at its `hedge_after`: `delay`, read as each call
    starts, and `take()`, their hedges' withdrawal (one object a call costs nothing to build).
    """

    __slots__ = ("_burst", "_share", "delay", "refused", "tokens")

    def __init__(self, share: float, burst: float = BUDGET_BURST) -> None:
        self._share = share
        self._burst = burst
        self.tokens = burst
        #: Hedges refused since the client was built.
        self.refused = 0
        #: Seconds before a hedge is sent on time; `None` while the percentile is not known yet.
        self.delay: float | None = None

    def deposit(self) -> None:
        """A hedged call starts: it pays its share."""
        tokens = self.tokens + self._share
        self.tokens = tokens if tokens < self._burst else self._burst

    def withdraw(self) -> bool:
        """Take one hedge, if the budget has one."""
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        return False

    take = withdraw  # a hedge is due on time: whether the budget allows it


class LatencyStrategy:
    """
    What `hedge_after="p95"` learns from: told every attempt's outcome (after the strategies,
    never asked), it keeps the durations in a window; `delay` reads the percentile.

    Recorded: responses the policy does not treat as failures, and timeouts (as Finagle does).
    An attempt cancelled after running longer than the delay in force (a lost hedge race,
    typically the slow original) is recorded at its elapsed time: it is known to be in the
    tail, and leaving out exactly the attempts hedging cuts short would pull the percentile
    down. One cancelled sooner is left out: how long it would have taken is unknown.

    The delays are read again every `REFRESH` seconds, as attempts are recorded (and at once
    when one still unknown has its 20 samples); each reading is handed to `on_read`, so the
    calls read their delay from their hedge budget without asking this for it.
    """

    def __init__(
        self, clock: Callable[[], float], on_read: Callable[[str, float | None], None] = lambda *_: None
    ) -> None:
        self._clock = clock
        self._on_read = on_read
        self.window = LatencyWindow()
        self._fresh = self.window.fresh  # what `record` appends to
        self._delays: dict[str, float | None] = {}
        self._refresh_at = -math.inf
        # Until then, recording an attempt is an append: no slot of the window ends, no reading
        # is due, and every delay is known (while one is not, every record may read it).
        self._due = -math.inf
        self._floor = math.inf  # the shortest delay in force: cancelled attempts past it are in the tail
        self._unknown = False  # a delay is still unknown: read again as soon as there are enough samples

    def admit(self, call: Call) -> None:
        """Every attempt goes: this strategy only learns."""

    def record(self, call: Call, outcome: Outcome, now: float | None = None) -> None:
        """
        Learn the duration of an attempt that answered, timed out, or was cut off in the tail,
        and ended at `now` on this estimate's clock (read when not given).
        """
        response = outcome.response
        if response is not None:  # an answer, unless the policy counts it a failure
            status = response.status_code
            if status >= 500 or status in call.policy.statuses:
                return
        elif outcome.refusal is not None:
            return  # nothing was sent
        elif not (outcome.duration > self._floor if outcome.cancelled else _timed_out(outcome)):
            return
        if now is None:
            now = self._clock()
        if now >= self._due:
            self._add(outcome.duration, now)
            return
        # The window's own `add`, in this frame: every attempt of a client hedged at a
        # percentile comes here.
        fresh = self._fresh
        fresh.append(outcome.duration)
        if len(fresh) >= FRESH:
            self.window.bucket()

    def _add(self, duration: float, now: float) -> None:
        """A duration added as a slot ends, or as a reading is due, then when the next one is."""
        window = self.window
        window.add(duration, now)
        if now >= self._refresh_at or (self._unknown and window.count >= MIN_SAMPLES):
            self._refresh(now)
        self._due = -math.inf if self._unknown else min(window.slot_end, self._refresh_at)

    def delay(self, hedge_after: str) -> float | None:
        """The delay `hedge_after` (`"p95"`) stands for now; `None` while learning (under 20 samples)."""
        now = self._clock()
        if now >= self._refresh_at or (self._unknown and self.window.count >= MIN_SAMPLES):
            self._refresh(now)
        if hedge_after not in self._delays:
            self._read(hedge_after, now)  # a new percentile: not in 3 s
        return self._delays[hedge_after]

    def _refresh(self, now: float) -> None:
        self._refresh_at = now + REFRESH
        for known in self._delays:
            self._read(known, now)

    def _read(self, hedge_after: str, now: float) -> None:
        value = self.window.percentile(_percentile(hedge_after), now)
        delay = self._delays[hedge_after] = None if value is None else max(MIN_DELAY, value)
        known = [delay for delay in self._delays.values() if delay is not None]
        self._floor = min(known, default=math.inf)
        self._unknown = len(known) < len(self._delays)
        self._due = -math.inf  # the next record works out when it is due again
        self._on_read(hedge_after, delay)

    def status(self) -> dict[str, object]:
        """The samples in the window and the learned delays (seconds; `None` while learning), now."""
        return {"samples": self.window.count, "delays": dict(self._delays)}


class HedgePacer:
    """
    Every hedged call's pace: its delay, fixed or learned, and the hedge budget it draws on.

    One budget per `hedge_after` value: a percentile's share is `BUDGET_SLACK` times the
    share of calls its delay is expected to hedge (6% for `"p95"`); a fixed delay, a guess
    that nothing keeps in tune, gets `FIXED_SHARE` (10%). The latency estimate is built the
    first time a percentile is asked for; `learning` hears of it (the pipeline then tells it
    of every attempt). A learned delay is kept on its budget as each reading is taken, so a
    call reads it there.
    """

    def __init__(self, clock: Callable[[], float], learning: Callable[[LatencyStrategy], None]) -> None:
        self._clock = clock
        self._learning = learning
        self._budgets: dict[float | str, HedgeBudget] = {}
        #: The latency estimate, once a percentile was asked for.
        self.latency: LatencyStrategy | None = None

    def learn(self) -> LatencyStrategy:
        """The latency estimate, built when first needed."""
        if self.latency is None:
            self.latency = LatencyStrategy(self._clock, self._learned)
            self._learning(self.latency)
        return self.latency

    def pace(self, hedge_after: float | str) -> HedgeBudget:
        """The pace of the calls hedged at `hedge_after`: their budget, with the delay in force."""
        budget = self._budgets.get(hedge_after)
        if budget is None:
            budget = self._budgets[hedge_after] = HedgeBudget(_share(hedge_after))
            # Fixed, or learned: read now, then kept up to date by the latency estimate.
            if isinstance(hedge_after, str):
                budget.delay = (self.latency or self.learn()).delay(hedge_after)
            else:
                budget.delay = hedge_after
        return budget

    def status(self) -> dict[str, object]:
        """The hedge budgets (tokens left, hedges refused) and the learned delays, now."""
        budgets = {str(key): {"tokens": round(b.tokens, 3), "refused": b.refused} for key, b in self._budgets.items()}
        return {"budgets": budgets, **(self.latency.status() if self.latency is not None else {})}

    def _learned(self, hedge_after: str, delay: float | None) -> None:
        budget = self._budgets.get(hedge_after)
        if budget is not None:
            budget.delay = delay


def _timed_out(outcome: Outcome) -> bool:
    """A timeout (a latency hedging is about); a pool timeout is local back-pressure, not the upstream's."""
    error = outcome.error
    return isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.PoolTimeout)


def _share(hedge_after: float | str) -> float:
    """The hedge budget per call: the percentile's expected share with slack, or `FIXED_SHARE`."""
    if isinstance(hedge_after, str):
        return BUDGET_SLACK * (1 - _percentile(hedge_after) / 100)
    return FIXED_SHARE


def _percentile(hedge_after: str) -> float:
    percentile = percentile_of(hedge_after)
    assert percentile is not None, "RetryPolicy checked it"
    return percentile
