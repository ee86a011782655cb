"""
The adaptive throttle's counts, shared by the fleet: local first, as the budget's are.

`FleetThrottleCounter` *is* the local `ThrottleCounter` (the gate does not change): every
count goes into the local buckets and into a "pending" tally. The store's background flush
(`sync_throttle`, one Lua script per client and flush) adds the tally to per-bucket hash
fields keyed by Redis server time and reads back the fleet's totals over the window; the
throttle then decides on those totals plus what is pending here. Without a fleet view (no
flush yet, Redis down, or an answer that makes no sense) it decides on the local counts.

What is read back is untrusted: counts that are not whole numbers, negative, huge, or with
more accepts than requests are ignored (one warning per client), never obeyed.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from .._strategies.throttle import AdaptiveThrottle, ThrottleCounter

__all__ = ["THROTTLE_SCRIPT", "FleetThrottleCounter", "sync_throttle"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: Buckets of the window in Redis (coarser than the local 100: the flush lags 0.1 s anyway).
REDIS_BUCKETS: Final = 20
#: More than any fleet sends in one window: a larger count read back is not believed.
MAX_COUNT: Final = 10**12

# KEYS: the throttle hash. ARGV: 1 bucket ms, 2 requests, 3 accepts, 4 buckets.
# Returns: the fleet's requests and accepts over the window (stale and garbage fields dropped).
THROTTLE_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local width, buckets = tonumber(ARGV[1]), tonumber(ARGV[4])
local idx = math.floor(now / width)
local dr, da = tonumber(ARGV[2]), tonumber(ARGV[3])
if dr > 0 then redis.call('HINCRBY', KEYS[1], 'r' .. idx, dr) end
if da > 0 then redis.call('HINCRBY', KEYS[1], 'a' .. idx, da) end
if dr > 0 or da > 0 then redis.call('PEXPIRE', KEYS[1], width * buckets * 2) end
local flat = redis.call('HGETALL', KEYS[1])
local r, a = 0, 0
for i = 1, #flat, 2 do
  local kind, bucket, value = string.sub(flat[i], 1, 1), tonumber(string.sub(flat[i], 2)), tonumber(flat[i + 1])
  if bucket == nil or value == nil or bucket <= idx - buckets or bucket > idx then
    redis.call('HDEL', KEYS[1], flat[i])
  elseif kind == 'r' then
    r = r + value
  elseif kind == 'a' then
    a = a + value
  end
end
return {r, a}
"""


class FleetThrottleCounter(ThrottleCounter):
    """A `ThrottleCounter` whose totals are the fleet's when they are known."""

    def __init__(self, config: AdaptiveThrottle) -> None:
        super().__init__(config)
        self.pending_requests = 0
        self.pending_accepts = 0
        #: The fleet's (requests, accepts) over the window at the last flush; `None`: local only.
        self.fleet: tuple[int, int] | None = None
        self.warned = False

    def count(self, now: float, accepted: bool) -> None:
        """Count here, and in the tally the next flush adds to the fleet's."""
        super().count(now, accepted)
        self.pending_requests += 1
        self.pending_accepts += accepted

    def totals(self, now: float) -> tuple[int, int]:
        """The fleet's totals plus what is pending here; the local ones without a fleet view."""
        local = super().totals(now)
        fleet = self.fleet
        if fleet is None:
            return local
        return fleet[0] + self.pending_requests, fleet[1] + self.pending_accepts

    def take(self) -> tuple[int, int]:
        """The counts since the last flush, zeroed."""
        taken = self.pending_requests, self.pending_accepts
        self.pending_requests = self.pending_accepts = 0
        return taken


async def sync_throttle(script: Any, key: str, client: str, counter: FleetThrottleCounter) -> None:
    """One flush of `client`'s throttle: publish the tally, adopt the fleet's totals (if sane)."""
    requests, accepts = counter.take()
    width = max(1, round(counter.config.window * 1000 / REDIS_BUCKETS))
    try:
        reply = await script(keys=[key], args=[width, requests, accepts, REDIS_BUCKETS])
    except BaseException:
        counter.pending_requests += requests  # published by the next flush instead
        counter.pending_accepts += accepts
        raise
    totals = _valid(reply)
    if totals is None:
        counter.fleet = None
        if not counter.warned:
            counter.warned = True
            logger.warning(
                "%s: the throttle counts read from Redis make no sense; using this process's counts.",
                client,
                extra={"client": client},
            )
        return
    counter.fleet = totals


def _valid(reply: object) -> tuple[int, int] | None:
    if not isinstance(reply, list | tuple) or len(reply) != 2:
        return None
    requests, accepts = reply
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (requests, accepts)):
        return None
    return (requests, accepts) if 0 <= accepts <= requests <= MAX_COUNT else None
