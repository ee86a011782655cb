"""
The slot schedule of a rate limit: GCRA (the generic cell rate algorithm), with the
server's word on top.

GCRA keeps one number, the theoretical arrival time (TAT): a slot may start at `TAT -
tolerance` at the earliest, and each slot moves TAT one interval (`per / rate`) on. Slots are
handed out in the order they are asked for (FIFO) and may lie ahead: the caller waits for
it. Over any window of `per` seconds at most `rate + burst` slots start (shown by
`tests/test_rate_limit.py` with hypothesis), unlike fixed windows, which allow twice the rate
across a window's edge.

A slot given back (its waiter was cancelled) is kept as a hole and handed to the next asker,
if still ahead (not while the server's count is in force: it cannot tell whether that slot
was counted); the slots ever used are then a subset of a conforming schedule, so the bound
holds. A slot that passed unused is lost: the bound is on starts, and it cannot be told apart
from one that started.

The server's word only ever moves slots later: a pause (`Retry-After`) holds every slot until
its end; a remaining quota (`RateLimit: r=..;t=..`, `X-RateLimit-Remaining`) lets at most that
many slots start before its reset; a server policy (`RateLimit-Policy: q=..;w=..`) paces slots
at `w / q` when that is slower than the configured rate (or when there is none).
"""

from __future__ import annotations

import heapq
import math

__all__ = ["Schedule"]

#: Seconds of floating-point error forgiven when a slot is compared with a limit.
EPSILON = 1e-9
#: Seconds by which two resets are taken for the same server window.
SAME_RESET = 0.5


class Schedule:
    """One client's slots: the next one, the holes, and the server's pause and quota."""

    __slots__ = (
        "_holes",
        "_tolerance",
        "burst",
        "interval",
        "left",
        "not_before",
        "reset_at",
        "server_interval",
        "tat",
    )

    def __init__(self, interval: float | None, burst: int) -> None:
        #: Seconds between slots of the configured rate; `None` without one.
        self.interval = interval
        self.burst = burst
        self._tolerance = burst * interval if interval is not None else 0.0
        #: The theoretical arrival time of the next slot.
        self.tat = -math.inf
        self._holes: list[float] = []
        #: No slot before this (the server's `Retry-After`).
        self.not_before = -math.inf
        #: Slots the server still allows before `reset_at`; `None` when it has not said.
        self.left: int | None = None
        self.reset_at = -math.inf
        #: Seconds between slots by the server's policy, when it sent one.
        self.server_interval: float | None = None

    def pace(self) -> float | None:
        """Seconds between two slots now: the slower of the configured and the server's pace."""
        if self.interval is None:
            return self.server_interval
        if self.server_interval is None:
            return self.interval
        return max(self.interval, self.server_interval)

    def earliest(self, now: float) -> float:
        """The slot an attempt asking at `now` would get (nothing is taken)."""
        return self._next(now)[0]

    def take(self, now: float, latest: float) -> float | None:
        """The next slot at or after `now`, taken; `None` (nothing taken) if later than `latest`."""
        interval = self.interval
        if self.left is None and self.server_interval is None and not self._holes and interval is not None:
            # The configured rate alone, as the server has said nothing: `_next` without the rest.
            slot = self.tat - self._tolerance
            slot = now if now >= slot else slot
            slot = slot if slot >= self.not_before else self.not_before
            if slot > latest + EPSILON:
                return None
            self.tat = (self.tat if self.tat > slot else slot) + interval
            return slot
        slot, hole = self._next(now)
        if slot > latest + EPSILON:
            return None
        if hole:
            heapq.heappop(self._holes)
        else:
            pace = self.interval if self.server_interval is None else self.pace()
            if pace is not None:
                self.tat = (self.tat if self.tat > slot else slot) + pace
        if self.left is not None and slot < self.reset_at:
            self.left -= 1
        return slot

    def give_back(self, slot: float, now: float) -> None:
        """A slot that will not be used: the next asker gets it, if it is still ahead."""
        if slot > now and slot >= self.not_before and self.left is None:
            heapq.heappush(self._holes, slot)

    def valid(self, slot: float) -> bool:
        """Whether a slot taken earlier may still be used: not in a pause, not over the server's count."""
        over = self.left is not None and self.left < 0 and slot < self.reset_at
        return slot >= self.not_before and not over

    async def refill(self, now: float, latest: float) -> None:
        """Nothing to refill: every slot is this process's."""

    def heed(self, pause: float | None, left: int | None, reset: float | None, pace: float | None) -> None:
        """The server's word, on this process's clock."""
        if pause is not None:
            self.pause(pause)
        if left is not None and reset is not None:
            self.quota(left, reset)
        if pace is not None:
            self.server_interval = pace

    def status(self, now: float) -> dict[str, object]:
        """The next slot, the pause and the server's count, in seconds from `now`."""
        return {
            "next_slot_in": max(0.0, self.earliest(now) - now),
            "paused_for": max(0.0, self.not_before - now),
            "server_remaining": self.left,
            "server_reset_in": None if self.left is None else max(0.0, self.reset_at - now),
            "pace": self.pace(),
            "fleet": None,
        }

    def pause(self, until: float) -> None:
        """The server asked for no request before `until`."""
        self.not_before = max(self.not_before, until)

    def quota(self, left: int, reset_at: float) -> None:
        """The server allows `left` more requests before `reset_at` (a newer window replaces it)."""
        if self.left is None or reset_at > self.reset_at + SAME_RESET:
            self.left, self.reset_at = left, reset_at
        elif reset_at >= self.reset_at - SAME_RESET:
            # The same window: answers cross on the wire, the smallest count is the freshest.
            self.left = min(self.left, left)

    def _next(self, now: float) -> tuple[float, bool]:
        if self.left is not None and now >= self.reset_at:
            self.left = None  # the server's window is over
        holes = self._holes
        while holes and (holes[0] < now or holes[0] < self.not_before):
            heapq.heappop(holes)
        slot = now if now >= self.not_before else self.not_before
        pace = self.interval if self.server_interval is None else self.pace()
        if pace is not None:
            # The tolerance stays that of the configured rate: a slower server pace never widens the burst.
            earliest = self.tat - self.burst * (self.interval or pace)
            slot = slot if slot >= earliest else earliest
        if self.left is not None and self.left <= 0:
            slot = max(slot, self.reset_at)
        if holes and holes[0] < slot and self.left is None:
            return holes[0], True
        return slot, False
