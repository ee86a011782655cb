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

__all__ = ["HedgeBudget", "HedgePacer", "LatencyStrategy", "LatencyWindow"]

#: Samples in the window before the percentile is trusted; with fewer, no hedge is sent on time.
MIN_SAMPLES: Final = 20
#: Seconds of attempts the percentile is taken over (Finagle's window: 30 s).
WINDOW: Final = 30.0
#: The window rolls in this many slots: the oldest slot is dropped whole.
WINDOW_SLOTS: Final = 6
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

# Histogram buckets grow by 4% (the delay's resolution), from 0.1 ms to about 10 minutes.
_LOWEST: Final = 1e-4
_GROWTH: Final = 1.04
_LOG_GROWTH: Final = math.log(_GROWTH)
_BUCKETS: Final = 400


def _bucket(seconds: float) -> int:
    # On every attempt: `math.floor` and a comparison cost a third of `int()` and `min()`.
    if seconds <= _LOWEST:
        return 0
    index = math.floor(math.log(seconds / _LOWEST) / _LOG_GROWTH) + 1
    return index if index < _BUCKETS else _BUCKETS - 1


def _upper_edge(bucket: int) -> float:
    # The bucket's upper edge: a delay read from it is never below the durations it holds.
    return _LOWEST * _GROWTH**bucket


class LatencyWindow:
    """Attempt durations over the last `WINDOW` seconds, in a fixed-size log histogram."""

    __slots__ = ("_counts", "_slot_end", "_slots", "_total", "_width", "count")

    def __init__(self, window: float = WINDOW, slots: int = WINDOW_SLOTS) -> None:
        self._width = window / slots
        self._slots = [[0] * _BUCKETS for _ in range(slots)]  # the newest last
        self._total = [0] * _BUCKETS  # the sum of the slots, kept as they change
        self._slot_end = -math.inf
        #: Samples in the window.
        self.count = 0

    def add(self, seconds: float, now: float) -> None:
        """Count one duration, observed at `now`. On the request path: a few list operations."""
        if now >= self._slot_end:
            self._roll(now)
        index = _bucket(seconds)
        self._slots[-1][index] += 1
        self._total[index] += 1
        self.count += 1

    def percentile(self, percentile: float, now: float) -> float | None:
        """The duration below which `percentile`% of the window's samples fall; `None` with too few."""
        if now >= self._slot_end:
            self._roll(now)
        if self.count < MIN_SAMPLES:
            return None
        rank = math.ceil(self.count * percentile / 100)
        seen = 0
        for index, count in enumerate(self._total):
            seen += count
            if seen >= rank:
                return _upper_edge(index)
        raise AssertionError("the counts add up to more than the histogram holds")  # pragma: no cover

    def _roll(self, now: float) -> None:
        # Drop the slots time has passed over (all of them after a long quiet spell).
        passed = len(self._slots) if self._slot_end == -math.inf else int((now - self._slot_end) // self._width) + 1
        for _ in range(min(passed, len(self._slots))):
            oldest = self._slots.pop(0)
            for index, count in enumerate(oldest):
                if count:
                    self._total[index] -= count
                    self.count -= count
                    oldest[index] = 0
            self._slots.append(oldest)
        self._slot_end = now + self._width if passed >= len(self._slots) else self._slot_end + passed * self._width


class HedgeBudget:
    """
    A token bucket for hedges: each hedged call deposits `share`, each hedge sent on time
    withdraws one; it holds at most `burst`, and starts full. Over any run of calls, the
    hedges sent on time number at most `burst + share * calls`.

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
    The per-attempt strategy behind `hedge_after="p95"`: it admits everything and learns from
    every attempt's outcome; `delay` reads the percentile.

    Recorded: responses the policy does not treat as failures, and timeouts (as Finagle does).
    An attempt cancelled after running longer than the delay in force (a lost hedge race,
    typically the slow original) is recorded at its elapsed time: it is known to be in the
    tail, and leaving out exactly the attempts hedging cuts short would pull the percentile
    down. One cancelled sooner is left out: how long it would have taken is unknown.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.window = LatencyWindow()
        self._delays: dict[str, float | None] = {}
        self._refresh_at = -math.inf
        self._floor = math.inf  # the shortest delay in force: cancelled attempts past it are in the tail

    def admit(self, call: Call) -> None:
        """Every attempt goes: this strategy only learns."""

    def record(self, call: Call, outcome: Outcome) -> None:
        """Learn the duration of an attempt that answered, timed out, or was cut off in the tail."""
        if outcome.refusal is not None:
            return
        if outcome.cancelled:
            if outcome.duration > self._floor:
                self.window.add(outcome.duration, self._clock())
            return
        if _answered(call, outcome):
            self.window.add(outcome.duration, self._clock())

    def delay(self, hedge_after: str) -> float | None:
        """The delay `hedge_after` (`"p95"`) stands for now; `None` while learning (under 20 samples)."""
        now = self._clock()
        delay = self._delays.get(hedge_after)
        if delay is not None and now < self._refresh_at:
            return delay  # read less than `REFRESH` ago: nearly every call
        if now >= self._refresh_at:
            self._refresh_at = now + REFRESH
            for known in self._delays:
                self._read(known, now)
        if hedge_after not in self._delays or (self._delays[hedge_after] is None and self.window.count >= MIN_SAMPLES):
            self._read(hedge_after, now)  # a new percentile, or enough samples at last: not in 3 s
        return self._delays[hedge_after]

    def _read(self, hedge_after: str, now: float) -> None:
        value = self.window.percentile(_percentile(hedge_after), now)
        self._delays[hedge_after] = None if value is None else max(MIN_DELAY, value)
        self._floor = min((delay for delay in self._delays.values() if delay is not None), default=math.inf)

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
    of every attempt).
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
            self.latency = LatencyStrategy(self._clock)
            self._learning(self.latency)
        return self.latency

    def pace(self, hedge_after: float | str) -> HedgeBudget:
        """The pace of one call hedged at `hedge_after`: its budget, with the delay in force now."""
        budget = self._budgets.get(hedge_after)
        if budget is None:
            budget = self._budgets[hedge_after] = HedgeBudget(_share(hedge_after))
        budget.deposit()  # the call pays its share
        if isinstance(hedge_after, str):
            budget.delay = (self.latency or self.learn()).delay(hedge_after)
        else:
            budget.delay = hedge_after
        return budget

    def status(self) -> dict[str, object]:
        """The hedge budgets (tokens left, hedges refused) and the learned delays, now."""
        budgets = {str(key): {"tokens": round(b.tokens, 3), "refused": b.refused} for key, b in self._budgets.items()}
        return {"budgets": budgets, **(self.latency.status() if self.latency is not None else {})}


def _answered(call: Call, outcome: Outcome) -> bool:
    """A response that is not a failure by the policy, or a timeout: the latencies hedging is about."""
    response = outcome.response
    if response is not None:
        status = response.status_code
        return status < 500 and status not in call.policy.statuses
    # A pool timeout is local back-pressure, not the upstream's latency.
    return isinstance(outcome.error, httpx.TimeoutException) and not isinstance(outcome.error, httpx.PoolTimeout)


def _share(hedge_after: float | str) -> float:
    """The hedge budget per call: the percentile's expected share with slack, or `FIXED_SHARE`."""
    if isinstance(hedge_after, str):
        return BUDGET_SLACK * (1 - _percentile(hedge_after) / 100)
    return FIXED_SHARE


def _percentile(hedge_after: str) -> float:
    percentile = percentile_of(hedge_after)
    assert percentile is not None, "RetryPolicy checked it"
    return percentile
