-- Sends a dead (FAILURE) job back to its queue with its attempts reset.
-- KEYS[1] job hash   KEYS[2] dead set   KEYS[3] sequence   KEYS[4] done list
-- ARGV: 1 key base, 2 id
-- Returns 1 when re-driven, 0 when the job is not dead.
local base, id = ARGV[1], ARGV[2]
if redis.call('ZREM', KEYS[2], id) == 0 then
  return 0
end
local d = redis.call('HGET', KEYS[1], 'd')
if not d then
  return 0
end
local queue, tenant, prio = placement(d)
if not queue then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'PENDING', 'attempts', 0)
redis.call('HDEL', KEYS[1], 'finished', 'expired')
redis.call('PERSIST', KEYS[1])
redis.call('DEL', KEYS[4])
push_ready(base, id, queue, tenant, prio, redis.call('INCR', KEYS[3]))
return 1
