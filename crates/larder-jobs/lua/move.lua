-- The maintenance of one partition, bounded per call: due entries of each queue's
-- delayed and retrying sets go to its ready sets (promote), jobs whose lease ran out
-- (their worker died) go back to their queue (reap), dead letters past their time
-- are dropped, and what is left in the shared sets of an earlier layout (see
-- lib.lua) is drained into the per-queue ones. At most LIMIT entries per set per
-- call; the caller calls again while a set was full, so any backlog drains.
-- A job revoked while it ran ends REVOKED here instead. A job whose leases ran out
-- past its retry budget (attempts and expired leases together: a job that kills
-- its worker) goes to the dead letters instead of round again.
-- KEYS[1] sequence
-- ARGV: 1 key base, 2 limit, 3 result ttl ms, 4 dead letters' ttl ms, 5 dead
--       letters' cap
-- Returns {promoted, reaped, 1 when a set had LIMIT due entries (call again) or 0}.
local now = now_ms()
local base, limit, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local dead = { ARGV[4], ARGV[5] }
local moved = { 0, 0 }
local full = 0

-- Settles job `id`, just taken off a set of `queue` (nil: a shared set of the
-- earlier layout, the job's own queue then); `reap` when its lease ran out.
local function settle(id, queue, reap)
  local jkey = base .. 'j:' .. id
  local f = redis.call('HMGET', jkey, 'd', 'state', 'revoked', 'attempts')
  -- f[2] (the state) is absent when the record expired or was deleted: nothing to do.
  if f[2] and f[2] ~= 'REVOKED' and f[2] ~= 'SUCCESS' and f[2] ~= 'FAILURE' then
    local own, tenant, prio, budget = placement(f[1] or '')
    queue = queue or own
    local expired = 0
    if reap then
      redis.call('HDEL', jkey, 'run')
      expired = redis.call('HINCRBY', jkey, 'expired', 1)
    end
    if f[3] == '1' then
      finish_revoked(base, jkey, id, now, ttl, 'revoked while running')
    elseif not own then
      bury(base, queue, jkey, id, now, ttl, dead)
    elseif (tonumber(f[4]) or 0) + expired > tonumber(budget) then
      redis.call('HSET', jkey, 'state', 'FAILURE', 'finished', now, 'error',
        'its lease ran out ' .. expired .. ' times without an outcome (the task may be ' ..
        'crashing its worker): past its retry budget of ' .. budget)
      to_dead(base, queue, jkey, id, now, dead[1], dead[2])
      if redis.call('HEXISTS', jkey, 'waited') == 1 then
        signal(base, id, 'FAILURE', ttl)
      end
    else
      redis.call('HSET', jkey, 'state', 'PENDING')
      push_ready(base, id, own, tenant, prio, redis.call('INCR', KEYS[1]))
    end
  elseif f[2] == 'REVOKED' and reap then
    -- A revoked job whose worker died: it ends revoked.
    redis.call('HDEL', jkey, 'run')
  end
end

-- Takes the due entries of `set` off it, at most LIMIT, and settles each; counts
-- them as promoted (slot 1) or reaped (slot 2).
local function drain(set, queue, slot)
  local due = redis.call('ZRANGE', set, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #due == 0 then
    return
  end
  redis.call('ZREM', set, unpack(due))
  for _, id in ipairs(due) do
    settle(id, queue, slot == 2)
  end
  moved[slot] = moved[slot] + #due
  if #due >= limit then
    full = 1
  end
end

-- Dead letters past their time leave their set here too, not only when another job
-- of the queue dies (their records expire by themselves at that time).
local past = now - tonumber(dead[1])
for _, queue in ipairs(redis.call('SMEMBERS', base .. 'queues')) do
  drain(qset(base, queue, 'delayed'), queue, 1)
  drain(qset(base, queue, 'retrying'), queue, 1)
  drain(qset(base, queue, 'inflight'), queue, 2)
  redis.call('ZREMRANGEBYSCORE', qset(base, queue, 'dead'), '-inf', past)
end

-- The earlier layout: its delayed and leased jobs settle as they come due; its dead
-- letters move, as they are, to their queue's (one whose record cannot be read is
-- dropped from the set; its record keeps its failure until it expires).
drain(base .. 'delayed', nil, 1)
drain(base .. 'inflight', nil, 2)
local old = redis.call('ZRANGE', base .. 'dead', 0, limit - 1, 'WITHSCORES')
for i = 1, #old, 2 do
  local id, at = old[i], old[i + 1]
  local queue = placement(redis.call('HGET', base .. 'j:' .. id, 'd') or '')
  if queue then
    redis.call('ZADD', qset(base, queue, 'dead'), at, id)
  end
  redis.call('ZREM', base .. 'dead', id)
end
if #old >= limit * 2 then
  full = 1
end
return { moved[1], moved[2], full }
