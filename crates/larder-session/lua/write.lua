-- Creates or updates a session. An update never brings back a session that was
-- deleted, revoked, rotated away or has expired: it only writes over a live record.
-- KEYS[1]  the session record
-- KEYS[2]  the scope's live sessions (a sorted set: member session hash, score the
--          session's idle expiry), which Sessions::active counts
-- KEYS[3]  the user's session index (a sorted set: member session hash, score the
--          session's absolute deadline); only read when ARGV[5] is not empty
-- ARGV[1]  'c' create (fails on an existing record) or 'u' update
-- ARGV[2]  data
-- ARGV[3]  idle timeout, ms
-- ARGV[4]  absolute timeout, ms (used on create)
-- ARGV[5]  user hash, or '' for an anonymous session
-- ARGV[6]  identity JSON (user, user agent, IP), or ''
-- ARGV[7]  the session's hash (its member in the index)
-- ARGV[8]  sessions a user holds at most: past it, the oldest (first to reach their
--          absolute deadline) are deleted, so the index, and a revoke-all over
--          it, stay bounded
-- Returns 1 stored, 0 gone (nothing written), -1 id collision on create.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local a
if ARGV[1] == 'c' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return -1
  end
  a = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'd', ARGV[2], 'h', string.format('%d %d %d 0', now, now, a))
else
  -- h: "created touched absolute rotated" (see touch.lua)
  local c, _, abs, r = string.match(redis.call('HGET', KEYS[1], 'h') or '', '^(%d+) (%d+) (%d+) ([01])$')
  if not c or r == '1' then
    return 0
  end
  a = tonumber(abs)
  if a <= now then
    redis.call('DEL', KEYS[1])
    return 0
  end
  redis.call('HSET', KEYS[1], 'd', ARGV[2], 'h', string.format('%s %d %d 0', c, now, a))
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'u', ARGV[5], 'm', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'u', 'm')
end
local ttl = math.min(tonumber(ARGV[3]), a - now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
-- Kept until the last absolute deadline: a touch never outlives it, so touch.lua
-- needs no PEXPIRE of its own.
if redis.call('PTTL', KEYS[2]) < a - now then
  redis.call('PEXPIRE', KEYS[2], a - now)
end
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], a, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[8])
  if over > 0 then
    -- The records sit beside the index: `{base}s:{hash}` (KEYS[1] is this one's).
    local base = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[7])
    for _, old in ipairs(redis.call('ZRANGE', KEYS[3], 0, over - 1)) do
      if redis.call('HGET', base .. old, 'u') == ARGV[5] then
        redis.call('DEL', base .. old)
        redis.call('ZREM', KEYS[2], old)
      end
    end
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, over - 1)
  end
  if redis.call('PTTL', KEYS[3]) < a - now then
    redis.call('PEXPIRE', KEYS[3], a - now)
  end
end
return 1
