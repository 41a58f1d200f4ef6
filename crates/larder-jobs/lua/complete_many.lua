-- Records the outcomes of a batch of jobs. Fenced per job: an outcome whose token
-- no longer matches is rejected.
-- KEYS[1] sequence   KEYS[2] this minute's outcome counts (a hash, kept 65 minutes,
--         read by Jobs::throughput: field `OUTCOME` counts all queues' and
--         `queue<TAB>OUTCOME` one queue's)
-- ARGV: 1 key base, 2 result ttl ms, 3 job count, 4 dead letters' ttl ms, 5 dead
--       letters' cap, then per job 5 fields: id, token, outcome, payload, retry at ms
-- A finished job's completion signal (the `done:{id}` list that waiters block on)
-- is only written when someone waits (the job's `waited` field, set by arm_wait.lua):
-- no key per job otherwise. The in-flight entries go in one variadic ZREM per queue
-- (the queue is the lease's, so a job whose record is malformed still has one).
-- Returns one entry per job: 1 recorded, 0 fenced off (lease lost).
local now = now_ms()
local at_now = string.format('%d', now) -- converted once, not per job
local base, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local dead = { ARGV[4], ARGV[5] }
local out = {}
-- Where a job of `queue` waits for its next attempt: the queue's set `name`, or (a
-- lease of an earlier layout on a record that cannot be read: no queue) the old
-- shared delayed set, which move.lua drains.
local function waits_in(queue, name)
  return queue and qset(base, queue, name) or base .. 'delayed'
end
local landed = {}  -- in-flight set -> ids
local counted = {}
for j = 0, n - 1 do
  local o = 5 + j * 5
  local id, token, outcome, payload, at = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], ARGV[o + 4], ARGV[o + 5]
  local jkey = base .. 'j:' .. id
  local f = redis.call('HMGET', jkey, 'run', 'waited', 'revoked')
  -- Revoked while it ran: it does not go round again (retry, defer, hand-back).
  if f[3] == '1' and (outcome == 'RETRY' or outcome == 'DEFER' or outcome == 'REQUEUE') then
    outcome, payload = 'REVOKED', 'revoked while running'
  end
  if not holds(f[1], token) then
    out[#out + 1] = 0
  else
    local inflight, queue = inflight_of(base, jkey, f[1])
    local ids = landed[inflight]
    if not ids then
      ids = {}
      landed[inflight] = ids
    end
    ids[#ids + 1] = id
    if outcome ~= 'DEFER' and outcome ~= 'REQUEUE' then
      counted[outcome] = (counted[outcome] or 0) + 1
      if queue then
        local field = queue .. '\t' .. outcome
        counted[field] = (counted[field] or 0) + 1
      end
    end
    if outcome == 'SUCCESS' then
      -- A finished job keeps what a status query shows (d, state, attempts,
      -- result); the arguments and the lease are emptied in the same write (one
      -- call instead of a delete and a write; small leftovers such as `eta` stay
      -- until the record expires). No `finished` time: nothing reads it, and the
      -- record's time to live says when it ended.
      redis.call('HSET', jkey, 'state', 'SUCCESS', 'result', payload, 'a', '', 'run', '')
      redis.call('PEXPIRE', jkey, ttl)
      if f[2] then
        signal(base, id, 'SUCCESS', ttl)
      end
    else
      redis.call('HDEL', jkey, 'run')
    end
    if outcome == 'RETRY' then
      local attempt = redis.call('HINCRBY', jkey, 'attempts', 1)
      redis.call('HSET', jkey, 'state', 'RETRY', 'error', payload, 'eta', at)
      log_error(jkey, attempt, at_now, payload)
      redis.call('ZADD', waits_in(queue, 'retrying'), tonumber(at), id)
    elseif outcome == 'DEFER' then
      redis.call('HSET', jkey, 'state', 'PENDING', 'eta', at)
      redis.call('ZADD', waits_in(queue, 'delayed'), tonumber(at), id)
    elseif outcome == 'FAILURE' then
      local attempt = redis.call('HINCRBY', jkey, 'attempts', 1)
      redis.call('HSET', jkey, 'state', 'FAILURE', 'error', payload, 'finished', at_now)
      log_error(jkey, attempt, at_now, payload)
      to_dead(base, queue, jkey, id, at_now, dead[1], dead[2])
      if f[2] then
        signal(base, id, 'FAILURE', ttl)
      end
    elseif outcome == 'REVOKED' then
      redis.call('HSET', jkey, 'state', 'REVOKED', 'error', payload, 'finished', at_now)
      redis.call('PEXPIRE', jkey, ttl)
      if f[2] then
        signal(base, id, 'REVOKED', ttl)
      end
    elseif outcome == 'REQUEUE' then
      local _, tenant, prio = placement(redis.call('HGET', jkey, 'd') or '')
      if tenant then
        redis.call('HSET', jkey, 'state', 'PENDING')
        push_ready(base, id, queue, tenant, prio, redis.call('INCR', KEYS[1]))
      else
        bury(base, queue, jkey, id, now, ttl, dead)
      end
    end
    out[#out + 1] = 1
  end
end
for inflight, ids in pairs(landed) do
  redis.call('ZREM', inflight, unpack(ids))
end
if next(counted) then
  for field, count in pairs(counted) do
    redis.call('HINCRBY', KEYS[2], field, count)
  end
  redis.call('PEXPIRE', KEYS[2], 3900000)
end
return out
