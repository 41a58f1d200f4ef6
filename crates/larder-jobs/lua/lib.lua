-- Shared by the job scripts: prepended to each when it is loaded (see
-- src/backend/redis.rs), so the queue's layout is written down once.

-- Redis's clock, in ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A ready set's score: higher priority first, then first in, first out.
local function ready_score(prio, seq)
  return -tonumber(prio) * 1099511627776 + seq
end

-- Adds `tenant` to the queue's round-robin ring unless it is there already.
local function join_ring(base, queue, tenant)
  if redis.call('SADD', base .. 'q:' .. queue .. ':ringset', tenant) == 1 then
    redis.call('RPUSH', base .. 'q:' .. queue .. ':ring', tenant)
  end
end

-- Wakes one idle worker of the queue (a one-element list it blocks on).
local function wake(base, queue)
  redis.call('LPUSH', base .. 'q:' .. queue .. ':wake', '1')
  redis.call('LTRIM', base .. 'q:' .. queue .. ':wake', 0, 0)
end

-- Puts job `id` on its tenant's ready set of `queue` and wakes a worker.
local function push_ready(base, id, queue, tenant, prio, seq)
  redis.call('ZADD', base .. 'q:' .. queue .. ':t:' .. tenant, ready_score(prio, seq), id)
  join_ring(base, queue, tenant)
  wake(base, queue)
end

