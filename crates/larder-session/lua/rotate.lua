-- Retires a session id after rotation: the record stays readable (read-only) for
-- the grace window, so parallel requests still carrying the old cookie resolve.
-- KEYS[1]  the old session record
-- KEYS[2]  the scope's live sessions (see write.lua): it leaves them either way
-- ARGV[1]  grace window, ms (0: delete now)
-- ARGV[2]  the session's hash (its member in the live sessions)
redis.call('ZREM', KEYS[2], ARGV[2])
local h = redis.call('HGET', KEYS[1], 'h')
if not h or tonumber(ARGV[1]) <= 0 then
  -- Gone, not a valid record, or no grace window: nothing to keep readable.
  return redis.call('DEL', KEYS[1])
end
-- h: "created touched absolute rotated" (see touch.lua); the last digit marks it.
redis.call('HSET', KEYS[1], 'h', string.sub(h, 1, -2) .. '1')
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 or pttl > tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
