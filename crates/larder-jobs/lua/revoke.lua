-- Revokes a job by id. Queued or delayed: removed and REVOKED now. Running: flagged;
-- the worker's next lease renewal cancels the task. Unknown: a REVOKED tombstone, so
-- a later enqueue of that id does nothing.
-- KEYS[1] job hash   KEYS[2] done list
-- ARGV: 1 key base, 2 id, 3 ttl ms
-- Returns the job's state after the call ('REVOKING' for a running job).
local now = now_ms()
local base, id, ttl = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', KEYS[1], 'state', 'd')
local state = f[1]
if not state then
  redis.call('HSET', KEYS[1], 'state', 'REVOKED', 'finished', now, 'error', 'revoked')
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 'REVOKED'
end
if state == 'SUCCESS' or state == 'FAILURE' or state == 'REVOKED' then
  return state
end
if state == 'RECEIVED' or state == 'STARTED' then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return 'REVOKING'
end
unqueue(base, id, f[2])
redis.call('HSET', KEYS[1], 'state', 'REVOKED', 'finished', now, 'error', 'revoked')
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('RPUSH', KEYS[2], 'REVOKED')
redis.call('PEXPIRE', KEYS[2], ttl)
return 'REVOKED'
