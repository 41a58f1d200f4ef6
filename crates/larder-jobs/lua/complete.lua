-- Records a job's outcome. Fenced: rejected (returns 0) when the job's lease was
-- lost, i.e. its token no longer matches.
-- KEYS[1] job hash   KEYS[2] in-flight set   KEYS[3] delayed set   KEYS[4] dead set
-- KEYS[5] done list  KEYS[6] sequence
-- ARGV: 1 key base, 2 id, 3 token, 4 outcome, 5 payload (result JSON or error),
--       6 retry at ms, 7 result ttl ms
-- Outcomes: SUCCESS, RETRY (to the delayed set, one more attempt), FAILURE (to the
-- dead set, kept), REVOKED, DEFER (to the delayed set, not an attempt: rate limit),
-- REQUEUE (back to its queue now: graceful shutdown).
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[3] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, id, outcome, ttl = ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[7])
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[1], 'token', 'revoked')
local function signal(state)
  redis.call('RPUSH', KEYS[5], state)
  redis.call('PEXPIRE', KEYS[5], ttl)
end
if outcome == 'SUCCESS' then
  redis.call('HSET', KEYS[1], 'state', 'SUCCESS', 'result', ARGV[5], 'finished', now)
  redis.call('HDEL', KEYS[1], 'args')
  redis.call('PEXPIRE', KEYS[1], ttl)
  signal('SUCCESS')
elseif outcome == 'RETRY' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'state', 'RETRY', 'error', ARGV[5], 'eta', ARGV[6])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[6]), id)
elseif outcome == 'DEFER' then
  redis.call('HSET', KEYS[1], 'state', 'PENDING', 'eta', ARGV[6])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[6]), id)
elseif outcome == 'FAILURE' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'state', 'FAILURE', 'error', ARGV[5], 'finished', now)
  redis.call('ZADD', KEYS[4], now, id)
  signal('FAILURE')
elseif outcome == 'REVOKED' then
  redis.call('HSET', KEYS[1], 'state', 'REVOKED', 'error', ARGV[5], 'finished', now)
  redis.call('PEXPIRE', KEYS[1], ttl)
  signal('REVOKED')
elseif outcome == 'REQUEUE' then
  local f = redis.call('HMGET', KEYS[1], 'queue', 'tenant', 'prio')
  local seq = redis.call('INCR', KEYS[6])
  redis.call('HSET', KEYS[1], 'state', 'PENDING')
  redis.call('ZADD', base .. 'q:' .. f[1] .. ':t:' .. f[2], -tonumber(f[3]) * 1099511627776 + seq, id)
  if redis.call('SADD', base .. 'q:' .. f[1] .. ':ringset', f[2]) == 1 then
    redis.call('RPUSH', base .. 'q:' .. f[1] .. ':ring', f[2])
  end
  redis.call('LPUSH', base .. 'q:' .. f[1] .. ':wake', '1')
  redis.call('LTRIM', base .. 'q:' .. f[1] .. ':wake', 0, 0)
end
return 1
