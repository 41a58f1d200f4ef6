-- Enqueues a batch of jobs in one call, each at most once per id.
-- KEYS[1] delayed set   KEYS[2] sequence
-- ARGV: 1 key base, 2 result ttl ms, 3 job count, then per job 10 fields:
--       id, task, args, queue, tenant, priority, max retries, eta ms, expires ms,
--       timeout ms
-- Returns one entry per job: 1 enqueued, 0 the id was taken.
local now = now_ms()
local base, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seq = redis.call('INCRBY', KEYS[2], n) - n
local out = {}
local woken = {}
local ringed = {}
for j = 0, n - 1 do
  local o = 3 + j * 10
  local id, queue, tenant, prio = ARGV[o + 1], ARGV[o + 4], ARGV[o + 5], tonumber(ARGV[o + 6])
  local jkey = base .. 'j:' .. id
  if redis.call('EXISTS', jkey) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', jkey, 'task', ARGV[o + 2], 'args', ARGV[o + 3], 'queue', queue,
      'tenant', tenant, 'prio', prio, 'max_retries', ARGV[o + 7], 'expires', ARGV[o + 9],
      'timeout', ARGV[o + 10], 'ttl', ttl, 'created', now, 'attempts', 0,
      'deliveries', 0, 'state', 'PENDING')
    local eta = tonumber(ARGV[o + 8])
    if eta > now then
      redis.call('ZADD', KEYS[1], eta, id)
      redis.call('HSET', jkey, 'eta', eta)
    else
      seq = seq + 1
      -- push_ready, with the ring join and the wake-up done once per batch
      redis.call('ZADD', base .. 'q:' .. queue .. ':t:' .. tenant, ready_score(prio, seq), id)
      local member = queue .. ':' .. tenant
      if not ringed[member] then
        ringed[member] = true
        join_ring(base, queue, tenant)
      end
      woken[queue] = true
    end
    out[#out + 1] = 1
  end
end
for queue, _ in pairs(woken) do
  wake(base, queue)
end
return out
