-- Enqueues a batch of jobs in one call, each at most once per id.
-- KEYS[1] delayed set   KEYS[2] sequence
-- ARGV: 1 key base, 2 result ttl ms, 3 job count, then per job 10 fields:
--       id, task, args, queue, tenant, priority, max retries, eta ms, expires ms,
--       timeout ms
-- Returns one entry per job: 1 enqueued, 0 the id was taken.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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
      redis.call('ZADD', base .. 'q:' .. queue .. ':t:' .. tenant, -prio * 1099511627776 + seq, id)
      local member = queue .. ':' .. tenant
      if not ringed[member] then
        ringed[member] = true
        if redis.call('SADD', base .. 'q:' .. queue .. ':ringset', tenant) == 1 then
          redis.call('RPUSH', base .. 'q:' .. queue .. ':ring', tenant)
        end
      end
      woken[queue] = true
    end
    out[#out + 1] = 1
  end
end
for queue, _ in pairs(woken) do
  redis.call('LPUSH', base .. 'q:' .. queue .. ':wake', '1')
  redis.call('LTRIM', base .. 'q:' .. queue .. ':wake', 0, 0)
end
return out
