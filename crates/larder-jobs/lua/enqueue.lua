-- Enqueues one job, at most once per id (the id doubles as the idempotency key).
-- KEYS[1] job hash   KEYS[2] the tenant's ready set of the queue   KEYS[3] ring
-- KEYS[4] ring set   KEYS[5] delayed set   KEYS[6] wake list   KEYS[7] sequence
-- ARGV: 1 id, 2 task, 3 args, 4 queue, 5 tenant, 6 priority, 7 max retries,
--       8 eta ms (0: now), 9 expires ms (0: never), 10 timeout ms, 11 result ttl ms
-- Returns {1, 'PENDING'} for a new job, {0, state} when the id is taken.
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  return {0, state}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'task', ARGV[2], 'args', ARGV[3], 'queue', ARGV[4],
  'tenant', ARGV[5], 'prio', ARGV[6], 'max_retries', ARGV[7], 'expires', ARGV[9],
  'timeout', ARGV[10], 'ttl', ARGV[11], 'created', now, 'attempts', 0,
  'deliveries', 0, 'state', 'PENDING')
local eta = tonumber(ARGV[8])
if eta > now then
  redis.call('ZADD', KEYS[5], eta, ARGV[1])
  redis.call('HSET', KEYS[1], 'eta', eta)
else
  local seq = redis.call('INCR', KEYS[7])
  redis.call('ZADD', KEYS[2], -tonumber(ARGV[6]) * 1099511627776 + seq, ARGV[1])
  if redis.call('SADD', KEYS[4], ARGV[5]) == 1 then
    redis.call('RPUSH', KEYS[3], ARGV[5])
  end
  redis.call('LPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], 0, 0)
end
return {1, 'PENDING'}
