"""
One flush of a shared store, Redis-free: the Lua script, the arguments a breaker sends with
it, and how a breaker takes in the fleet's answer. `fastapi_retry_http.redis` runs it.

Keys (KEYS), one set per client name: budget hash, breaker hash, `open`, `tripped`, `probe`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

from .. import _clock
from .fleet import FleetBreakerState

__all__ = ["SCRIPT", "adopt", "breaker_args", "bucket_ms", "hold"]

logger: Final = logging.getLogger("fastapi_retry_http")

# KEYS: budget hash, breaker hash, open, tripped, probe
# ARGV: 1 budget bucket ms (0: no budget), 2 requests, 3 retries,
#       4 breaker bucket ms (0: no breaker), 5 attempts, 6 failures,
#       7 action ("", "open", "close", "release"), 8 break ms, 9 times opened, 10 token,
#       11 want probe ("1"/"0"), 12 tripped ms, 13 lease ms
# Returns: requests, retries, attempts, failures, open PTTL, times opened (0: not tripped),
#          probe granted (1/0), probe PTTL
SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function window(key, width, a, b, da, db)
  if width <= 0 then return 0, 0 end
  local idx = math.floor(now / width)
  if da > 0 then redis.call('HINCRBY', key, a .. idx, da) end
  if db > 0 then redis.call('HINCRBY', key, b .. idx, db) end
  if da > 0 or db > 0 then redis.call('PEXPIRE', key, width * 20) end
  local flat = redis.call('HGETALL', key)
  local sa, sb = 0, 0
  for i = 1, #flat, 2 do
    local field = flat[i]
    if tonumber(string.sub(field, 2)) <= idx - 10 then
      redis.call('HDEL', key, field)
    elseif string.sub(field, 1, 1) == a then
      sa = sa + tonumber(flat[i + 1])
    else
      sb = sb + tonumber(flat[i + 1])
    end
  end
  return sa, sb
end
local action = ARGV[7]
if action == 'close' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
elseif action == 'open' then
  redis.call('SET', KEYS[3], ARGV[9], 'PX', ARGV[8])
  redis.call('SET', KEYS[4], ARGV[9], 'PX', ARGV[12])
end
if (action == 'open' or action == 'release') and redis.call('GET', KEYS[5]) == ARGV[10] then
  redis.call('DEL', KEYS[5])
end
local req, ret = window(KEYS[1], tonumber(ARGV[1]), 'r', 't', tonumber(ARGV[2]), tonumber(ARGV[3]))
local att, fail = window(KEYS[2], tonumber(ARGV[4]), 'a', 'f', tonumber(ARGV[5]), tonumber(ARGV[6]))
local open = -2
local streak = 0
local granted = 0
local probe = -2
if tonumber(ARGV[4]) > 0 then
  open = redis.call('PTTL', KEYS[3])
  local tripped = redis.call('GET', KEYS[4])
  if tripped then streak = tonumber(tripped) end
  if open < 0 and streak > 0 then
    local holder = redis.call('GET', KEYS[5])
    if holder == ARGV[10] then
      granted = 1
    elseif not holder and ARGV[11] == '1' then
      redis.call('SET', KEYS[5], ARGV[10], 'PX', ARGV[13])
      granted = 1
    end
    probe = redis.call('PTTL', KEYS[5])
  end
end
return {req, ret, att, fail, open, streak, granted, probe}
"""


def breaker_args(state: FleetBreakerState, interval: float, lease: float) -> list[Any]:
    """ARGV 4-13 of the script for `state`: its counts, and what to publish or ask for."""
    now = _clock.monotonic()
    config = state.config
    attempts, failures = state.take()
    action, break_ms = "", 0
    if state.closed_here:
        action, state.closed_here, state.lease = "close", False, False
        state.seen_open_until = state.open_until
    elif state.open_until != state.seen_open_until and state.open_until > now:
        # Opened here (by the counts, or a failed probe): publish the break. The local break
        # is held a little longer, so that the probe lease is asked for before it ends here.
        action, state.lease = "open", False
        break_ms = max(1, round((state.open_until - now) * 1000))
        state.open_until += hold(interval)
        state.seen_open_until = state.open_until
    elif state.lease and not state.probing:
        # Granted at the last flush, but no attempt came to probe with: let another process.
        action, state.lease = "release", False
    want = not state.probing and not state.lease and state.open_until <= now + interval
    tripped_ms = round((config.max_break_duration + config.window) * 2000)
    return [
        bucket_ms(config.window),
        attempts,
        failures,
        action,
        break_ms,
        max(1, state.opened),
        state.token,
        "1" if want else "0",
        tripped_ms,
        round(lease * 1000),
    ]


def hold(interval: float) -> float:
    """Seconds a break is held here past the fleet's, so the probe lease is asked for first."""
    return 2 * interval


def adopt(
    client: str, state: FleetBreakerState, interval: float, open_ms: int, streak: int, granted: bool, probe_ms: int
) -> None:
    """Take in the fleet's break after a flush: open, half-open (the lease holder probes) or closed."""
    if state.probing:
        return  # a probe is out here: its outcome decides
    now = _clock.monotonic()
    if open_ms > 0:  # open fleet-wide
        until = now + open_ms / 1000 + hold(interval)
        if state.open_until < until:
            if state.open_until == -math.inf:
                logger.warning(
                    "%s: circuit breaker opened by another process; no requests are sent for %.1fs.",
                    client,
                    open_ms / 1000,
                    extra={"client": client, "circuit_state": "open", "break_duration": open_ms / 1000},
                )
            state.open_until = state.seen_open_until = until
            state.opened = max(state.opened, streak)
    elif streak > 0:  # half-open fleet-wide: the lease holder probes, the others wait
        if granted:
            if not state.lease:  # the next attempt here is the fleet's probe
                state.lease = True
                state.open_until = state.seen_open_until = now
                state.opened = max(state.opened, streak)
        elif probe_ms > 0:
            until = now + probe_ms / 1000 + hold(interval)
            if state.open_until < until:
                state.open_until = state.seen_open_until = until
                state.opened = max(state.opened, streak)
    elif state.open_until != -math.inf and state.open_until == state.seen_open_until:
        # The break here came from (or went to) the fleet, and the fleet has closed since.
        state.close_from_fleet()
        logger.info(
            "%s: circuit breaker closed by another process's probe.",
            client,
            extra={"client": client, "circuit_state": "closed"},
        )


def bucket_ms(window: float) -> int:
    """A tenth of `window`, in whole milliseconds (at least one)."""
    return max(1, round(window * 100))
