-- Shared by the job scripts: prepended to each when it is loaded (see
-- src/backend/redis.rs), so the queue's layout is written down once.
--
-- A job is the hash `{base}j:{id}`, kept to few fields (Redis's cost grows with
-- each field written or read):
--   d        "queue<TAB>tenant<TAB>priority<TAB>max retries<TAB>timeout ms<TAB>created
--            ms<TAB>task" (written once; queue and tenant cannot hold a tab, the task
--            name comes last so it may)
--   a        the arguments (JSON), emptied when the job succeeds
--   state    PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE or REVOKED
--   run      "token<TAB>worker<TAB>fetched at ms<TAB>queue" while a worker holds the
--            job (absent or empty otherwise)
--   attempts (absent: 0), expires, eta, revoked (set while it runs: it never runs
--            again, whatever path it takes back to a queue), expired (how many of
--            its leases ran out without an outcome), waited (someone waits for the
--            outcome), and once finished: result or error; failed and revoked
--            jobs also keep `finished` (ms), for whoever inspects the dead set;
--   errors   each failed attempt's error, the last ten: a JSON array of
--            [attempt, at ms, error] (written only when an attempt fails).
-- Every other state has one sorted set per queue, so that a queue's counts by state
-- are set sizes: ready jobs sit in `q:{queue}:t:{tenant}` (tenants with ready jobs
-- in the ring `q:{queue}:ring` and `:ringset`), leased jobs in `q:{queue}:inflight`
-- (score: lease end), jobs waiting for a countdown or ETA in `q:{queue}:delayed`
-- and for a retry's back-off in `q:{queue}:retrying` (score: due time), dead
-- letters in `q:{queue}:dead` (score: when they died). `queues` names every queue a
-- job was ever enqueued to (counts and maintenance need the names).
--
-- Earlier layouts kept one `delayed`, `inflight` and `dead` set for all queues of a
-- partition; move.lua drains what is left in them into the sets above.
--
-- Numbers that reach `redis.call` unchanged (times to live, times) are passed as the
-- strings they arrived as: Redis formats a Lua number with snprintf on every call
-- (about 2,500 instructions, measured with scripts/jobs-redis-cost).

-- A job's queue, tenant, priority and retry budget, from its `d` field.
local function placement(d)
  return string.match(d, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t')
end

-- The key of `queue`'s sorted set `name` (delayed, retrying, inflight or dead).
local function qset(base, queue, name)
  return base .. 'q:' .. queue .. ':' .. name
end

-- The queue of a job held by a worker, from its `run` field (nil for a lease taken
-- before the queue was written there, or no lease).
local function run_queue(run)
  return run and string.match(run, '^[^\t]*\t[^\t]*\t[^\t]*\t(.+)$')
end

-- The in-flight set that holds the lease `run` of job `jkey`: its queue's, named by
-- the lease or else by the job's `d`; a lease of an unplaceable job: the old shared set.
local function inflight_of(base, jkey, run)
  local queue = run_queue(run) or placement(redis.call('HGET', jkey, 'd') or '')
  if queue then
    return qset(base, queue, 'inflight'), queue
  end
  return base .. 'inflight', nil
end

-- Wakes the waiters of job `id`, which ended in `state`: the `done:{id}` list they
-- block on (without consuming it), kept `ttl` ms.
local function signal(base, id, state, ttl)
  local done = base .. 'done:' .. id
  redis.call('RPUSH', done, state)
  redis.call('PEXPIRE', done, ttl)
end

-- Adds job `id` to `queue`'s dead letters (its `dead` set, scored by when it died).
-- A dead letter is kept `dead` ms, its record too, and a queue keeps at most
-- `dead_max` of them: each addition drops those past their time and, over the cap,
-- the oldest, records and all (one or two per addition: bounded work). With no queue
-- (a job met in a set of the earlier layout whose record cannot be read), the
-- record alone is kept `dead` ms, listed nowhere.
local function to_dead(base, queue, jkey, id, now, dead, dead_max)
  redis.call('PEXPIRE', jkey, dead)
  if not queue then
    return
  end
  local set = qset(base, queue, 'dead')
  redis.call('ZADD', set, now, id)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now - tonumber(dead))
  local over = redis.call('ZCARD', set) - tonumber(dead_max)
  if over > 0 then
    for _, old in ipairs(redis.call('ZRANGE', set, 0, over - 1)) do
      redis.call('UNLINK', base .. 'j:' .. old)
    end
    redis.call('ZREMRANGEBYRANK', set, 0, over - 1)
  end
end

-- Fails a job whose record cannot be read (no usable `d`): it goes to the dead
-- letters of `queue` (the one it was met in) with a clear error instead of stopping
-- the script that met it, and its waiters, if any, are woken. (The error is
-- MALFORMED_RECORD of src/backend/redis.rs, which fails the ones a worker fetches.)
-- `queue` and `dead`: see `to_dead`.
local function bury(base, queue, jkey, id, now, ttl, dead)
  redis.call('HSET', jkey, 'state', 'FAILURE', 'finished', now,
    'error', 'malformed job record (not written by this version of larder-jobs)')
  to_dead(base, queue, jkey, id, now, dead[1], dead[2])
  if redis.call('HEXISTS', jkey, 'waited') == 1 then
    signal(base, id, 'FAILURE', ttl)
  end
end

-- Ends job `id` as REVOKED with `why`: its record is kept `ttl` ms and its waiters,
-- if any, are woken. For a job revoked while it ran, wherever it would go next.
local function finish_revoked(base, jkey, id, now, ttl, why)
  redis.call('HSET', jkey, 'state', 'REVOKED', 'error', why, 'finished', now)
  redis.call('HDEL', jkey, 'run')
  redis.call('PEXPIRE', jkey, ttl)
  if redis.call('HEXISTS', jkey, 'waited') == 1 then
    signal(base, id, 'REVOKED', ttl)
  end
end

-- True when the `run` field `run` belongs to the holder of `token`.
local function holds(run, token)
  return run and string.sub(run, 1, #token + 1) == token .. '\t'
end

-- Appends attempt `attempt`'s error to the job's `errors` (the last ten kept). A
-- field that does not decode (written by hand) starts again from this error.
local function log_error(jkey, attempt, at, err)
  local old = redis.call('HGET', jkey, 'errors')
  local ok, list = pcall(cjson.decode, old or '[]')
  if not ok or type(list) ~= 'table' then
    list = {}
  end
  list[#list + 1] = { attempt, tonumber(at), err }
  while #list > 10 do
    table.remove(list, 1)
  end
  redis.call('HSET', jkey, 'errors', cjson.encode(list))
end

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
  redis.call('LTRIM', base .. 'q:' .. queue .. ':wake', '0', '0')
end

-- Takes job `id` out of wherever it waits: its tenant's ready set, its queue's
-- delayed and retrying sets (named by its `d` field), the shared delayed set of
-- older versions. Returns its queue (nil when `d` cannot be read).
local function unqueue(base, id, d)
  local queue, tenant = placement(d or '')
  if queue then
    redis.call('ZREM', base .. 'q:' .. queue .. ':t:' .. tenant, id)
    redis.call('ZREM', qset(base, queue, 'delayed'), id)
    redis.call('ZREM', qset(base, queue, 'retrying'), id)
  end
  redis.call('ZREM', base .. 'delayed', id)
  return queue
end

-- Puts job `id` on its tenant's ready set of `queue` and wakes a worker.
local function push_ready(base, id, queue, tenant, prio, seq)
  redis.call('ZADD', base .. 'q:' .. queue .. ':t:' .. tenant, ready_score(prio, seq), id)
  join_ring(base, queue, tenant)
  wake(base, queue)
end

