-- Moves due entries of a sorted set (delayed jobs whose time came, or in-flight
-- jobs whose lease expired: their worker died) back to their queues, at most LIMIT
-- per call; callers repeat while a full batch moved, so any backlog drains.
-- KEYS[1] the sorted set   KEYS[2] sequence
-- ARGV: 1 key base, 2 limit, 3 mode ('promote' or 'reap'), 4 result ttl ms
-- Returns the number of entries taken off the set.
local now = now_ms()
local base = ARGV[1]
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local jkey = base .. 'j:' .. id
  local f = redis.call('HMGET', jkey, 'd', 'state')
  -- f[2] (the state) is absent when the record expired or was deleted: nothing to do.
  if f[2] and f[2] ~= 'REVOKED' and f[2] ~= 'SUCCESS' and f[2] ~= 'FAILURE' then
    if ARGV[3] == 'reap' then
      redis.call('HDEL', jkey, 'run')
    end
    local queue, tenant, prio = placement(f[1] or '')
    if queue then
      redis.call('HSET', jkey, 'state', 'PENDING')
      push_ready(base, id, queue, tenant, prio, redis.call('INCR', KEYS[2]))
    else
      bury(base, jkey, id, now, ARGV[4])
    end
  elseif f[2] == 'REVOKED' and ARGV[3] == 'reap' then
    -- A revoked job whose worker died: it ends revoked.
    redis.call('HDEL', jkey, 'run')
  end
end
return #due
