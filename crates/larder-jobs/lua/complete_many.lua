-- Records the outcomes of a batch of jobs (see complete.lua for one). Fenced per
-- job: an outcome whose token no longer matches is rejected.
-- KEYS[1] in-flight set   KEYS[2] delayed set   KEYS[3] dead set   KEYS[4] sequence
-- ARGV: 1 key base, 2 result ttl ms, 3 job count, then per job 5 fields:
--       id, token, outcome, payload, retry at ms
-- A finished job's completion signal (the `done:{id}` list that waiters block on)
-- is only written when someone waits (`wait:{id}` exists): no key per job otherwise.
-- Returns one entry per job: 1 recorded, 0 fenced off (lease lost).
local now = now_ms()
local base, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for j = 0, n - 1 do
  local o = 3 + j * 5
  local id, token, outcome, payload, at = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], ARGV[o + 4], ARGV[o + 5]
  local jkey = base .. 'j:' .. id
  local done = base .. 'done:' .. id
  local waited = base .. 'wait:' .. id
  if redis.call('HGET', jkey, 'token') ~= token then
    out[#out + 1] = 0
  else
    redis.call('ZREM', KEYS[1], id)
    if outcome == 'SUCCESS' then
      -- A finished job keeps what a status query shows (task, state, tenant,
      -- attempts, result, times); the rest only served delivery.
      redis.call('HDEL', jkey, 'token', 'revoked', 'args', 'worker', 'received', 'started',
        'deliveries', 'timeout', 'max_retries', 'expires', 'prio', 'ttl', 'eta', 'queue')
      redis.call('HSET', jkey, 'state', 'SUCCESS', 'result', payload, 'finished', now)
      redis.call('PEXPIRE', jkey, ttl)
      if redis.call('EXISTS', waited) == 1 then
        redis.call('RPUSH', done, 'SUCCESS')
        redis.call('PEXPIRE', done, ttl)
      end
    else
      redis.call('HDEL', jkey, 'token', 'revoked')
    end
    if outcome == 'RETRY' then
      redis.call('HINCRBY', jkey, 'attempts', 1)
      redis.call('HSET', jkey, 'state', 'RETRY', 'error', payload, 'eta', at)
      redis.call('ZADD', KEYS[2], tonumber(at), id)
    elseif outcome == 'DEFER' then
      redis.call('HSET', jkey, 'state', 'PENDING', 'eta', at)
      redis.call('ZADD', KEYS[2], tonumber(at), id)
    elseif outcome == 'FAILURE' then
      redis.call('HINCRBY', jkey, 'attempts', 1)
      redis.call('HSET', jkey, 'state', 'FAILURE', 'error', payload, 'finished', now)
      redis.call('ZADD', KEYS[3], now, id)
      if redis.call('EXISTS', waited) == 1 then
        redis.call('RPUSH', done, 'FAILURE')
        redis.call('PEXPIRE', done, ttl)
      end
    elseif outcome == 'REVOKED' then
      redis.call('HSET', jkey, 'state', 'REVOKED', 'error', payload, 'finished', now)
      redis.call('PEXPIRE', jkey, ttl)
      if redis.call('EXISTS', waited) == 1 then
        redis.call('RPUSH', done, 'REVOKED')
        redis.call('PEXPIRE', done, ttl)
      end
    elseif outcome == 'REQUEUE' then
      local f = redis.call('HMGET', jkey, 'queue', 'tenant', 'prio')
      redis.call('HSET', jkey, 'state', 'PENDING')
      push_ready(base, id, f[1], f[2], f[3], redis.call('INCR', KEYS[4]))
    end
    out[#out + 1] = 1
  end
end
return out
