"""
One flush of a shared store, Redis-free: the Lua script, the arguments a breaker sends with
it, and how a breaker takes in the fleet's answer. `fastapi_retry_http.redis` runs it.

Keys (KEYS), one set per client name: budget hash, breaker hash, `open`, `tripped`, `probe`,
`closed`. Nothing read back is trusted: the script drops hash fields that are not counts
(not a number, negative, over `COUNT_LIMIT`, dated in the future, of another kind), removes
keys of the wrong type, cuts any TTL longer than ours (an `open` key's to the break cap),
and says how many values it had to drop or cut; `adopt` bounds the reply again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from .fleet import FleetBreakerState

__all__ = [
    "COUNT_LIMIT",
    "SCRIPT",
    "Reply",
    "adopt",
    "breaker_args",
    "bucket_ms",
    "lease_ms",
    "max_break_ms",
    "parse_reply",
]

#: A count above this in one bucket is not believed (10^8: far beyond any real fleet's traffic).
COUNT_LIMIT: Final = 100_000_000
#: Flushes a process sits out before asking for the probe lease again after giving it up unused.
COOLDOWN_FLUSHES: Final = 2

# KEYS: budget hash, breaker hash, open, tripped, probe, closed
# ARGV: 1 budget bucket ms (0: no budget), 2 requests, 3 retries,
#       4 breaker bucket ms (0: no breaker), 5 attempts, 6 failures,
#       7 action ("", "open", "close"), 8 break ms, 9 times opened, 10 token,
#       11 want probe ("1"/"0"), 12 tripped ms, 13 lease ms, 14 release ("1"/"0"),
#       15 max break ms, 16 close marker
# Returns: requests, retries, attempts, failures, open PTTL (-2: not open), times opened
#          (0: not tripped), probe granted (1/0), probe PTTL, close marker, values dropped
SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local LIMIT = 100000000
local bad = 0
local function kind(key)
  return redis.call('TYPE', key)['ok']
end
local function text(key)
  local k = kind(key)
  if k == 'none' then return nil end
  if k ~= 'string' then redis.call('DEL', key); bad = bad + 1; return nil end
  return redis.call('GET', key)
end
local function capped(key, ms)
  local left = redis.call('PTTL', key)
  if left == -1 or left > ms then redis.call('PEXPIRE', key, ms); bad = bad + 1; left = ms end
  return left
end
local function window(key, width, a, b, da, db)
  if width <= 0 then return 0, 0 end
  local k = kind(key)
  if k ~= 'hash' and k ~= 'none' then redis.call('DEL', key); bad = bad + 1 end
  local idx = math.floor(now / width)
  local flat = redis.call('HGETALL', key)
  local sa, sb = 0, 0
  for i = 1, #flat, 2 do
    local field, n = flat[i], tonumber(flat[i + 1])
    local c, at = string.sub(field, 1, 1), tonumber(string.sub(field, 2))
    if at == nil or at ~= at or at > idx or (c ~= a and c ~= b)
      or n == nil or n ~= n or n < 0 or n > LIMIT or n ~= math.floor(n) then
      redis.call('HDEL', key, field)
      bad = bad + 1
    elseif at <= idx - 10 then
      redis.call('HDEL', key, field)
    elseif c == a then
      sa = sa + n
    else
      sb = sb + n
    end
  end
  if da > 0 then redis.call('HINCRBY', key, a .. idx, da); sa = sa + da end
  if db > 0 then redis.call('HINCRBY', key, b .. idx, db); sb = sb + db end
  if redis.call('EXISTS', key) == 1 then
    if da > 0 or db > 0 then redis.call('PEXPIRE', key, width * 20) else capped(key, width * 20) end
  end
  return sa, sb
end
local breaker = tonumber(ARGV[4]) > 0
local action, token, maxms = ARGV[7], ARGV[10], tonumber(ARGV[15])
local trippedms, leasems = tonumber(ARGV[12]), tonumber(ARGV[13])
if breaker then
  if action == 'close' then
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
    redis.call('SET', KEYS[6], ARGV[16], 'PX', trippedms)
  elseif action == 'open' then
    redis.call('SET', KEYS[3], ARGV[9], 'PX', ARGV[8])
    redis.call('SET', KEYS[4], ARGV[9], 'PX', trippedms)
  end
  if (action ~= '' or ARGV[14] == '1') and text(KEYS[5]) == token then redis.call('DEL', KEYS[5]) end
end
local req, ret = window(KEYS[1], tonumber(ARGV[1]), 'r', 't', tonumber(ARGV[2]), tonumber(ARGV[3]))
local att, fail = window(KEYS[2], tonumber(ARGV[4]), 'a', 'f', tonumber(ARGV[5]), tonumber(ARGV[6]))
local open, streak, granted, probe, closed = -2, 0, 0, -2, ''
if breaker then
  local opened = text(KEYS[3])
  if opened then open = capped(KEYS[3], maxms) end
  local tripped = text(KEYS[4])
  if tripped then
    streak = tonumber(tripped)
    if streak == nil or streak ~= streak or streak < 1 or streak > 64 then streak = 1; bad = bad + 1 end
    streak = math.floor(streak)
    capped(KEYS[4], trippedms)
  elseif opened then
    streak = 1
  end
  if open < 0 and streak > 0 then
    local holder = text(KEYS[5])
    if holder == token then
      granted = 1
    elseif not holder and ARGV[11] == '1' then
      redis.call('SET', KEYS[5], token, 'PX', leasems)
      granted = 1
    end
    if holder or granted == 1 then probe = capped(KEYS[5], leasems) end
  end
  closed = text(KEYS[6]) or ''
  if closed ~= '' then capped(KEYS[6], trippedms) end
end
return {req, ret, att, fail, open, streak, granted, probe, closed, bad}
"""


@dataclass(frozen=True, slots=True)
class Reply:
    """The script's answer, bounded: what a breaker and a budget take in."""

    requests: int
    retries: int
    attempts: int
    failures: int
    open_ms: int
    streak: int
    granted: bool
    probe_ms: int
    closed: str
    dropped: int


def _bounded(value: object, low: int, high: int) -> int:
    """`value` as an integer within [low, high]; `ValueError` when it is not a number at all."""
    number: int = int(value)  # type: ignore[call-overload]
    return max(low, min(high, number))


def parse_reply(reply: Any, max_break_ms: int, lease_ms: int) -> Reply | None:
    """The script's reply bounded again (a script of another version may have answered); `None`: unusable."""
    try:
        req, ret, att, fail, open_ms, streak, granted, probe_ms, closed, dropped = reply
        count = 10 * COUNT_LIMIT  # ten buckets
        return Reply(
            _bounded(req, 0, count),
            _bounded(ret, 0, count),
            _bounded(att, 0, count),
            _bounded(fail, 0, count),
            _bounded(open_ms, -2, max_break_ms),
            _bounded(streak, 0, 64),
            _bounded(granted, 0, 1) == 1,
            _bounded(probe_ms, -2, lease_ms),
            closed.decode("ascii", "replace")[:64] if isinstance(closed, bytes) else str(closed)[:64],
            _bounded(dropped, 0, 1 << 30),
        )
    except (TypeError, ValueError):
        return None


def max_break_ms(state: FleetBreakerState) -> int:
    """The cap on any break, in milliseconds."""
    return max(1, round(state.config.max_break_duration * 1000))


def lease_ms(state: FleetBreakerState, lease: float) -> int:
    """The fleet's probe lease, in milliseconds: at most the break duration."""
    return max(1, round(min(lease, state.config.break_duration) * 1000))


def breaker_args(state: FleetBreakerState, now: float, lease: float) -> list[Any]:
    """ARGV 4-16 of the script for `state`: its counts, and what to publish or ask for."""
    config = state.config
    attempts, failures = state.take()
    action, state.publish = state.publish, ""
    break_ms = 0
    if action == "open":
        break_ms = max(1, min(max_break_ms(state), round((state.open_until - now) * 1000)))
    probing = state.probe_out(now)
    release = action == "" and state.fleet_lease_until != -math.inf and not probing
    if release:
        # Held a flush long with no probe out here (never used, or it got no answer): let go.
        if not state.lease_used:
            state.cooldown = COOLDOWN_FLUSHES  # others wait: do not take it straight back
        state.fleet_lease_until, state.lease_used = -math.inf, False
    want = state.demand and state.cooldown == 0 and not probing and state.fleet_lease_until == -math.inf
    state.demand = False
    state.cooldown = max(0, state.cooldown - 1)
    return [
        bucket_ms(config.window),
        attempts,
        failures,
        action,
        break_ms,
        max(1, min(64, state.opened)),
        state.token,
        "1" if want else "0",
        round((config.max_break_duration + config.window) * 2000),
        lease_ms(state, lease),
        "1" if release else "0",
        max_break_ms(state),
        f"{state.token}:{state.decided}",
    ]


def adopt(state: FleetBreakerState, now: float, reply: Reply, decided: int, slack: float, lease: float) -> None:
    """
    Take in the fleet's break after a flush: open, half-open or closed by another process.

    `decided` is `state.decided` when the flush began: a change decided here meanwhile is
    published by the next flush, and nothing contrary is adopted before then. `slack` (the
    flush interval) keeps the echo of a break published here from extending it.
    """
    if reply.granted:
        until = now + (reply.probe_ms if reply.probe_ms > 0 else lease_ms(state, lease)) / 1000
        if state.fleet_lease_until == -math.inf:
            state.lease_used = False
        state.fleet_lease_until = until
    closed_elsewhere = reply.closed != "" and reply.closed != state.seen_close
    state.seen_close = reply.closed
    if state.decided == decided:
        if reply.open_ms > 0 or reply.streak > 0:
            until = now + max(0, reply.open_ms) / 1000
            if not state.tripped or until > state.open_until + slack:
                state.adopt_open(now, until, reply.streak)
        elif closed_elsewhere:
            state.adopt_close(now)
        elif state.tripped and not state.probe_out(now):
            # Tripped here, but Redis has forgotten it (restarted, evicted, expired): say it again.
            state.publish = "open"
    state.phase(now)  # a break over is announced as half-open, traffic or not


def bucket_ms(window: float) -> int:
    """A tenth of `window`, in whole milliseconds (at least one)."""
    return max(1, round(window * 100))
