"""
A rate limit shared by the fleet: slots leased from Redis in batches, so most attempts take
a slot without any round trip, and this process's share of the rate when Redis is down.

Redis keeps one GCRA for the client name (its TAT, the server's pause and remaining count),
on Redis's own clock (`TIME`): every process asks the same clock, so host clocks may differ.
One Lua script (`QUOTA_SCRIPT`) grants a batch of consecutive slots, publishes what the
upstream said (a pause, a remaining count, a pace) and records this process as seen. A batch
is sized to about `LEASE_SPAN` seconds of this process's recent demand (at least one slot,
at most `MAX_LEASE`), and the next one is asked for in the background before the batch runs
out, so under load about one attempt in `rate x LEASE_SPAN / processes` waits for Redis.
Slots of a batch that pass unused are lost (never handed out twice): the bound over any
window holds for the fleet as it does for one process.

Redis down (an error or no answer within the store's timeout): this process goes on alone at
`rate / processes`, `processes` being how many distinct processes leased slots (or said they
are alive: every process leases at least every `PRESENCE / 2` seconds while it has traffic)
in the last `PRESENCE` seconds, as counted by Redis at this process's last lease; one warning
per outage, Redis tried again in the background every `OUTAGE_RETRY` seconds.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from .. import _clock
from .._strategies.rate_limit import LATE, MAX_PAUSE, NEED_LEASE, RateLimit, _NeedLease
from .._strategies.slots import EPSILON, Schedule
from .fleet_quota_lua import QUOTA_SCRIPT

Run = Callable[[list[str], list[Any]], Awaitable[Any]]

__all__ = ["LEASE_SPAN", "MAX_LEASE", "PRESENCE", "QUOTA_SCRIPT", "FleetLimiter"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: Seconds of this process's recent demand one lease asks for.
LEASE_SPAN: Final = 0.5
#: The most slots one lease asks for.
MAX_LEASE: Final = 256
#: The least batch for which the next one is leased ahead (a quieter process leases on demand).
PREFETCH_FROM: Final = 4
#: Seconds a process counts as present after its last lease.
PRESENCE: Final = 10.0
#: Seconds between two tries of Redis while it is down.
OUTAGE_RETRY: Final = 0.5
#: Seconds after a lease arrives during which its slots that passed meanwhile are still used.
LEASE_GRACE: Final = 0.05
#: Seconds for which Redis's earliest slot, from the last lease, is trusted without asking again.
FRESH: Final = 0.1
#: Seconds after which the clock offset is taken afresh from the next round trip.
RESYNC: Final = 10.0
#: The most processes a share is computed for (a bad count read back is bounded).
MAX_PROCESSES: Final = 10_000
#: Seconds a server window is kept in Redis past its reset, and the least TTL of every key.
KEEP: Final = 60.0


class FleetLimiter:
    """The fleet's slots for one client name, leased in batches; this process's share without Redis."""

    def __init__(self, config: RateLimit, key: str, run: Run, clock: Callable[[], float] = _clock.monotonic) -> None:
        self.config = config
        self._keys = [key, f"{key}:processes"]
        self._run, self._clock = run, clock
        self._id = secrets.token_hex(8)
        self._slots: deque[float] = deque()  # leased, on this process's clock, in order
        self._holes: list[float] = []
        #: The server's word as this process heard it, and the share used while Redis is down.
        self.local = Schedule(config.interval, config.burst or 0)
        self._said: tuple[float, int, float] | None = None  # (pause until, left, reset at) to publish
        self._lease: asyncio.Task[None] | None = None
        self._recent: deque[float] = deque()
        self._asking = 0  # attempts waiting for a lease
        self._late = LATE  # how long ago a leased slot may have passed and still be used
        self._last_lease = -math.inf
        self._earliest = -math.inf
        self._offset: tuple[float, float, float] | None = None  # (round trip, Redis - here, when)
        self.down = False
        self._retry_at = -math.inf
        self._back_at = math.inf  # when a process back in touch with Redis uses the fleet's slots again
        self._horizon = -math.inf  # the last slot leased
        #: Processes Redis saw lately, at the last lease (this one included).
        self.processes = 1
        #: Leases asked of Redis so far (round trips).
        self.round_trips = 0
        #: Attempts of the client in flight here, waiting for their slot included (set by the gate).
        self.in_flight: Callable[[], int] = lambda: 0

    def take(self, now: float, latest: float) -> float | _NeedLease | None:
        """A leased slot (or a hole), `NEED_LEASE` when none is at hand; the share when Redis is down."""
        if self.down:
            if self._back_at <= now:
                self._recover()
            else:
                if now >= self._retry_at and self._back_at == math.inf:
                    self._background(now)
                return self.local.take(now, latest)
        slots, holes = self._slots, self._holes
        # A slot Redis gave as "now" is a round trip old when it arrives, and the attempts that
        # asked for it resume a little later still (a busy loop): it is theirs for LEASE_GRACE.
        since = self._last_lease if now - self._last_lease < LEASE_GRACE else now
        while slots and (slots[0] < since - self._late or not self.local.valid(slots[0])):
            slots.popleft()  # passed unused, or inside a pause: lost
        while holes and (holes[0] < now or not self.local.valid(holes[0])):
            heapq.heappop(holes)
        if holes and (not slots or holes[0] < slots[0]):
            return heapq.heappop(holes) if holes[0] <= latest + EPSILON else None
        if not slots:
            if self._earliest > latest + EPSILON and now - self._last_lease < FRESH:
                return None  # Redis said just now that nothing is within reach: no round trip for that
            return NEED_LEASE
        if slots[0] > latest + EPSILON:
            return None
        self._demand(now)
        batch = self._batch(now)
        if (batch >= PREFETCH_FROM and len(slots) * 4 <= batch) or now - self._last_lease > PRESENCE / 2:
            self._background(now)  # the next batch before this one runs out
        return slots.popleft()

    async def refill(self, now: float, latest: float) -> None:
        """Lease a batch (or join the lease in flight); on failure, go on alone at the share."""
        self._asking += 1
        try:
            if self._lease is None:
                await asyncio.sleep(0)  # the other attempts asking now join this lease
                self._background(now)
            assert self._lease is not None
            await asyncio.shield(self._lease)
        finally:
            self._asking -= 1

    def earliest(self, now: float) -> float:
        """The earliest slot known here (the next leased one, or Redis's at the last lease)."""
        if self.down:
            return self.local.earliest(now)
        ahead = [s for s in self._slots if s >= now - LATE][:1] + self._holes[:1]
        return max(now, min(ahead)) if ahead else max(now, self._earliest, self.local.earliest(now))

    def valid(self, slot: float) -> bool:
        """Whether a slot taken earlier may still be used (a pause may have come since)."""
        return self.local.valid(slot)

    def give_back(self, slot: float, now: float) -> None:
        """A slot not used: the next taker here gets it, if it is still ahead."""
        if slot > now:
            if self.down:
                self.local.give_back(slot, now)
            elif self.local.valid(slot):
                heapq.heappush(self._holes, slot)

    def heed(self, pause: float | None, left: int | None, reset: float | None, pace: float | None) -> None:
        """Apply the server's word here at once, and publish it to the fleet with a lease now."""
        self.local.heed(pause, left, reset, pace)
        now = self._clock()
        spent = left is not None and left <= 0 and reset is not None and reset > now
        if pause is None and not spent:
            return  # a count with quota left changes nothing for the fleet: not worth a round trip
        self._said = (pause or -math.inf, -1 if left is None else max(0, left), reset or 0.0)
        self._background(now)

    def status(self, now: float) -> dict[str, object]:
        """The local view (server's word), and the fleet's: leased slots, processes, Redis."""
        status = self.local.status(now)
        status["next_slot_in"] = max(0.0, self.earliest(now) - now)
        status["fleet"] = {
            "redis": "down" if self.down else "up",
            "processes": self.processes,
            "leased": len(self._slots),
            "round_trips": self.round_trips,
        }
        return status

    def _demand(self, now: float) -> None:
        recent = self._recent
        recent.append(now)
        while recent[0] < now - 1.0:
            recent.popleft()

    def _batch(self, now: float) -> int:
        # Slots taken over the last second, for LEASE_SPAN seconds, but no more than the attempts
        # in flight here could use: a batch is consecutive slots of the fleet, and a slot that
        # passes with nobody waiting for it is lost. At least one per attempt asking.
        wanted = min(MAX_LEASE, math.ceil(len(self._recent) * LEASE_SPAN), self.in_flight())
        return max(1, self._asking, wanted)

    def _background(self, now: float) -> None:
        if self._lease is None:
            self._lease = asyncio.ensure_future(self._leasing(now))

    async def _leasing(self, now: float) -> None:
        try:
            await self._lease_once(now)
        finally:
            self._lease = None

    async def _lease_once(self, now: float) -> None:
        config, pace = self.config, self.local.pace()
        interval = math.ceil((pace or 0.0) * 1e6)  # rounded up: never faster than the rate
        said, self._said = self._said, None
        pause, left, reset = said if said is not None else (-math.inf, -1, 0.0)
        count = self._batch(now) if not self.down else 0
        args = [interval, config.burst or 0, count, math.ceil(config.max_wait * 1e6), self._id]
        args += [_micros(pause - now), left, _micros(reset - now)]
        args += [math.ceil(PRESENCE * 1e6), math.ceil(KEEP * 1000)]
        self.round_trips += 1
        sent = self._clock()
        try:
            reply = await self._run(self._keys, args)
            processes, redis_now, earliest, *offsets = (int(x) for x in reply)
        except Exception as error:  # nothing fails because of Redis
            self._outage(now, error, said)
            return
        self._last_lease = received = self._clock()
        self._late = max(LATE, received - sent)
        here = self._place(redis_now / 1e6, sent, received)
        if self.down:
            # Back once the slots taken alone have passed: the fleet's schedule does not know them.
            self._back_at = self.local.tat
            return
        # Read back from a shared store: untrusted. Counts and offsets out of range are not obeyed.
        self.processes = min(max(1, processes), MAX_PROCESSES)
        reach = config.max_wait * 1e6 + 1
        self._earliest = here + min(max(0, earliest), MAX_PAUSE * 1e6) / 1e6
        fresh = [here + offset / 1e6 for offset in offsets if 0 <= offset <= reach][:count]
        if fresh:
            if self._slots and fresh[0] < self._slots[-1]:  # a concurrent lease came back out of order
                fresh = [s for s in fresh if s > self._slots[-1]]
            self._slots.extend(fresh)
            self._horizon = max(self._horizon, fresh[-1])

    def _place(self, redis_now: float, sent: float, received: float) -> float:
        """
        Redis's `now` on this process's clock. Redis ran TIME between `sent` and `received`;
        under load this loop may read the reply late by many milliseconds, so the offset
        between the two clocks comes from the quickest round trip of the last `RESYNC` seconds
        (as NTP does), good to half of it (a loopback round trip: about 0.1 ms).
        """
        trip, offset = received - sent, redis_now - (sent + received) / 2
        best = self._offset
        if best is None or trip <= best[0] or received - best[2] > RESYNC:
            self._offset = best = (trip, offset, received)
        return redis_now - best[1]

    def _outage(self, now: float, error: Exception, said: tuple[float, int, float] | None) -> None:
        self._retry_at = now + OUTAGE_RETRY
        if said is not None and self._said is None:
            self._said = said  # published by the next lease that gets through
        if self.down:
            return
        self.down = True
        share = self.processes
        interval = self.config.interval
        local = Schedule(None if interval is None else interval * share, (self.config.burst or 0) // share)
        local.heed(self.local.not_before, self.local.left, self.local.reset_at, self.local.server_interval)
        local.tat = self._horizon  # after the slots leased here: they may still be used
        self.local, self._slots, self._holes = local, deque(), []
        self._back_at = math.inf
        logger.warning(
            "%s: Redis unreachable for the rate limit (%s); this process keeps to 1/%d of the rate until it is back.",
            self._keys[0],
            type(error).__name__,
            share,
            extra={"reason": "rate_limit"},
        )

    def _recover(self) -> None:
        self.down, self._back_at = False, math.inf
        local = Schedule(self.config.interval, self.config.burst or 0)
        local.heed(self.local.not_before, self.local.left, self.local.reset_at, self.local.server_interval)
        self.local = local
        logger.info("%s: Redis reachable again; the rate limit is shared again.", self._keys[0])


def _micros(seconds: float) -> int:
    """Whole microseconds, rounded up, from 0 to `MAX_PAUSE` (a time past means none)."""
    return math.ceil(min(seconds, MAX_PAUSE) * 1e6) if seconds > 0 else 0
