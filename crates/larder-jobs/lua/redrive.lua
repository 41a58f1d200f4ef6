-- Sends a dead (FAILURE) job back to its queue with its attempts reset.
-- KEYS[1] job hash   KEYS[2] sequence   KEYS[3] done list
-- ARGV: 1 key base, 2 id
-- Returns 1 when re-driven, 0 when the job is not dead (or its record cannot be read).
local base, id = ARGV[1], ARGV[2]
local d = redis.call('HGET', KEYS[1], 'd')
local queue, tenant, prio = placement(d or '')
if not queue then
  return 0
end
-- Its queue's dead letters, or those of the earlier layout (see lib.lua).
if redis.call('ZREM', qset(base, queue, 'dead'), id) == 0
  and redis.call('ZREM', base .. 'dead', id) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'PENDING', 'attempts', 0)
redis.call('HDEL', KEYS[1], 'finished', 'expired')
redis.call('PERSIST', KEYS[1])
redis.call('DEL', KEYS[3])
push_ready(base, id, queue, tenant, prio, redis.call('INCR', KEYS[2]))
return 1
