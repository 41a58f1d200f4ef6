-- Loads a session and extends its idle expiry if it was last touched at least the
-- touch interval ago. Plain loads are one HMGET; this runs when a load finds the
-- session due for a touch (at most once per interval), and for explicit touches.
-- KEYS[1]  the session record (a hash: d data; h "created touched absolute rotated",
--          times in ms, rotated 1 once rotated away; u user hash, m identity JSON)
-- KEYS[2]  the scope's live sessions (see write.lua)
-- ARGV[1]  idle timeout, ms
-- ARGV[2]  touch interval, ms (0: touch on every load)
-- ARGV[3]  the session's hash (its member in the live sessions)
-- Returns false (gone) or {data, created, touched, expires, read_only}; times are
-- Redis's clock in ms.
local v = redis.call('HMGET', KEYS[1], 'd', 'h')
local c, touched, a, r = string.match(v[2] or '', '^(%d+) (%d+) (%d+) ([01])$')
if not v[1] or not c then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
a = tonumber(a)
if a <= now then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return false
end
touched = tonumber(touched)
local read_only = 0
local expires
if r == '1' then
  read_only = 1
  expires = now + math.max(redis.call('PTTL', KEYS[1]), 0)
elseif now - touched >= tonumber(ARGV[2]) then
  touched = now
  local ttl = math.min(tonumber(ARGV[1]), a - now)
  redis.call('HSET', KEYS[1], 'h', string.format('%s %d %d 0', c, now, a))
  redis.call('PEXPIRE', KEYS[1], ttl)
  -- (The set lives until the last absolute deadline: see write.lua.)
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
  expires = now + ttl
else
  expires = now + math.max(redis.call('PTTL', KEYS[1]), 0)
end
return {v[1], tonumber(c), touched, expires, read_only}
