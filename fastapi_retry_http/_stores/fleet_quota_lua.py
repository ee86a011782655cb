"""The rate limit's one Lua script: GCRA on Redis's clock, the server's word, the processes seen."""

from __future__ import annotations

from typing import Final

__all__ = ["QUOTA_SCRIPT"]

# KEYS: 1 quota hash (tat, nb, left, reset; microseconds of Redis time), 2 processes zset
# ARGV: 1 interval us, 2 burst, 3 count, 4 horizon us, 5 process id, 6 pause us (0: none),
#       7 left (-1: none), 8 reset us, 9 presence us, 10 keep ms
# Returns: processes seen, Redis's TIME (us), earliest slot (us from then), granted slots (us from then)
QUOTA_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local day = 86400000000
local s = redis.call('HMGET', KEYS[1], 'tat', 'nb', 'left', 'reset')
local function sane(v) v = tonumber(v); if v == nil or v ~= v or v > now + day then return nil end; return v end
local tat, nb, left, reset = sane(s[1]) or 0, sane(s[2]) or 0, sane(s[3]), sane(s[4]) or 0
if left ~= nil and (left < -1000000 or reset <= now) then left = nil end
local pause = tonumber(ARGV[6])
if pause > 0 then nb = math.max(nb, now + pause) end
local said = tonumber(ARGV[7])
if said >= 0 then
  local r = now + tonumber(ARGV[8])
  if left == nil or r > reset + 500000 then left, reset = said, r
  elseif r >= reset - 500000 then left = math.min(left, said) end
end
local function earliest()
  local e = math.max(now, nb, tat - burst * interval)
  if left ~= nil and left <= 0 then e = math.max(e, reset) end
  return e
end
local out = {}
local horizon = now + tonumber(ARGV[4])
for i = 1, count do
  local e = earliest()
  if e > horizon then break end
  tat = math.max(tat, e) + interval
  if left ~= nil and e < reset then left = left - 1 end
  out[#out + 1] = e - now
end
local keep = tonumber(ARGV[10])
local ttl = math.ceil((math.max(tat, nb, reset) - now) / 1000) + keep
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat), 'nb', string.format('%.0f', nb),
  'reset', string.format('%.0f', reset))
if left ~= nil then redis.call('HSET', KEYS[1], 'left', left) else redis.call('HDEL', KEYS[1], 'left') end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[9]))
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[9]) / 1000) + keep)
return {redis.call('ZCARD', KEYS[2]), now, earliest() - now, unpack(out)}
"""
