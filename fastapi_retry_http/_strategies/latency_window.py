"""
The window of attempt durations that learned hedging reads its percentile from: a log
histogram per slot of the window, the oldest slot dropped whole as time passes.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from itertools import accumulate
from operator import add, sub
from typing import Final

__all__ = ["FRESH", "MIN_SAMPLES", "WINDOW", "WINDOW_SLOTS", "LatencyWindow"]

#: Samples in the window before the percentile is trusted; with fewer, no hedge is sent on time.
MIN_SAMPLES: Final = 20
#: Seconds of attempts the percentile is taken over (Finagle's window: 30 s).
WINDOW: Final = 30.0
#: The window rolls in this many slots: the oldest slot is dropped whole.
WINDOW_SLOTS: Final = 6

# Histogram buckets grow by 4% (the delay's resolution), from 0.1 ms to about 10 minutes.
_LOWEST: Final = 1e-4
_GROWTH: Final = 1.04
_BUCKETS: Final = 400
_SCALE: Final = 1 / _LOWEST
_PER_BUCKET: Final = 1 / math.log2(_GROWTH)
#: Durations kept as they come, at most, before they go into their buckets all at once.
FRESH: Final = 4096


def _upper_edge(bucket: int) -> float:
    # The bucket's upper edge: a delay read from it is never below the durations it holds.
    return _LOWEST * _GROWTH**bucket


def _bucket_of(seconds: float) -> int:
    # log2(seconds / _LOWEST) / log2(_GROWTH), rounded up, within the buckets there are.
    index = math.floor(math.log2(seconds * _SCALE) * _PER_BUCKET) + 1 if seconds > _LOWEST else 0
    return index if index < _BUCKETS else _BUCKETS - 1


class LatencyWindow:
    """
    Attempt durations over the last `WINDOW` seconds, in a fixed-size log histogram per slot
    of the window.

    On the request path, adding one is an append: the durations go into the newest slot's
    buckets in a batch, as the window is read or rolls (or holds `FRESH` of them), sorted
    in C and cut at the edges of the buckets they span. Bucketing each as it came, with a
    logarithm, cost 1.7 times as much per attempt (measured). The older slots are kept summed as
    they roll, so reading the percentile (every few seconds) is a few passes in C over the
    buckets.
    """

    __slots__ = ("_newest", "_older", "_older_count", "_size", "_slots", "_width", "fresh", "slot_end")

    def __init__(self, window: float = WINDOW, slots: int = WINDOW_SLOTS) -> None:
        self._width = window / slots
        self._size = slots
        self._slots: deque[list[int]] = deque(maxlen=slots - 1)  # the slots before the newest, oldest first
        self._newest = [0] * _BUCKETS
        self._older = [0] * _BUCKETS  # the sum of `_slots`, kept as they roll
        self._older_count = 0
        #: Durations added since the last batch, not in a bucket yet. A caller on the request path
        #: may append to it directly, as `add` does: after rolling the window once `slot_end`
        #: has passed, and with a `bucket()` once it holds `FRESH`.
        self.fresh: list[float] = []
        #: When the newest slot ends (`-inf` before the first duration).
        self.slot_end = -math.inf

    @property
    def count(self) -> int:
        """Samples in the window."""
        return self._older_count + sum(self._newest) + len(self.fresh)

    def add(self, seconds: float, now: float) -> None:
        """Count one duration, observed at `now`. On the request path: an append."""
        if now >= self.slot_end:
            self.roll(now)
        fresh = self.fresh
        fresh.append(seconds)
        if len(fresh) >= FRESH:
            self.bucket()

    def percentile(self, percentile: float, now: float) -> float | None:
        """The duration below which `percentile`% of the window's samples fall; `None` with too few."""
        if now >= self.slot_end:
            self.roll(now)
        self.bucket()
        below = list(accumulate(map(add, self._older, self._newest)))  # samples up to each bucket
        if below[-1] < MIN_SAMPLES:
            return None
        return _upper_edge(bisect_left(below, math.ceil(below[-1] * percentile / 100)))

    def roll(self, now: float) -> None:
        """`slot_end` has passed: the newest slot is closed, the oldest dropped (all, after a quiet spell)."""
        self.bucket()  # what was added since the last batch belongs to the slot that ends
        slots, size = self._slots, self._size
        passed = size if self.slot_end == -math.inf else int((now - self.slot_end) // self._width) + 1
        for _ in range(min(passed, size)):
            if len(slots) == size - 1:  # the oldest leaves the window
                oldest = slots[0]
                self._older = list(map(sub, self._older, oldest))
                self._older_count -= sum(oldest)
            self._older = list(map(add, self._older, self._newest))
            self._older_count += sum(self._newest)
            slots.append(self._newest)
            self._newest = [0] * _BUCKETS
        self.slot_end = now + self._width if passed >= size else self.slot_end + passed * self._width

    def bucket(self) -> None:
        """The durations added since the last batch, into the newest slot's buckets."""
        fresh = self.fresh
        if not fresh:
            return
        fresh.sort()
        newest, counted = self._newest, 0
        last = _bucket_of(fresh[-1])
        for bucket in range(_bucket_of(fresh[0]), last):  # the buckets they span, in order
            below = bisect_right(fresh, _upper_edge(bucket), counted)
            newest[bucket] += below - counted
            counted = below
        newest[last] += len(fresh) - counted
        fresh.clear()
