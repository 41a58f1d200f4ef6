-- Moves due entries of a sorted set (delayed jobs whose time came, or in-flight
-- jobs whose lease expired: their worker died) back to their queues, at most LIMIT
-- per call; callers repeat while a full batch moved, so any backlog drains.
-- A job revoked while it ran ends REVOKED here instead. A job whose leases ran out
-- past its retry budget (attempts and expired leases together: a job that kills
-- its worker) goes to the dead letters instead of round again.
-- KEYS[1] the sorted set   KEYS[2] sequence   KEYS[3] dead set
-- ARGV: 1 key base, 2 limit, 3 mode ('promote' or 'reap'), 4 result ttl ms,
--       5 dead letters' ttl ms, 6 dead letters' cap
-- Returns the number of entries taken off the set.
local now = now_ms()
local base, ttl = ARGV[1], ARGV[4]
local dead = { ARGV[5], ARGV[6] }
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local jkey = base .. 'j:' .. id
  local f = redis.call('HMGET', jkey, 'd', 'state', 'revoked', 'attempts')
  -- f[2] (the state) is absent when the record expired or was deleted: nothing to do.
  if f[2] and f[2] ~= 'REVOKED' and f[2] ~= 'SUCCESS' and f[2] ~= 'FAILURE' then
    local queue, tenant, prio, budget = placement(f[1] or '')
    local expired = 0
    if ARGV[3] == 'reap' then
      redis.call('HDEL', jkey, 'run')
      expired = redis.call('HINCRBY', jkey, 'expired', 1)
    end
    if f[3] == '1' then
      finish_revoked(base, jkey, id, now, ttl, 'revoked while running')
    elseif not queue then
      bury(base, jkey, id, now, ttl, dead)
    elseif (tonumber(f[4]) or 0) + expired > tonumber(budget) then
      redis.call('HSET', jkey, 'state', 'FAILURE', 'finished', now, 'error',
        'its lease ran out ' .. expired .. ' times without an outcome (the task may be ' ..
        'crashing its worker): past its retry budget of ' .. budget)
      to_dead(base, jkey, id, now, dead[1], dead[2])
      if redis.call('HEXISTS', jkey, 'waited') == 1 then
        signal(base, id, 'FAILURE', ttl)
      end
    else
      redis.call('HSET', jkey, 'state', 'PENDING')
      push_ready(base, id, queue, tenant, prio, redis.call('INCR', KEYS[2]))
    end
  elseif f[2] == 'REVOKED' and ARGV[3] == 'reap' then
    -- A revoked job whose worker died: it ends revoked.
    redis.call('HDEL', jkey, 'run')
  end
end
return #due
