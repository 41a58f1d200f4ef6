-- Removes up to `batch` ready jobs of a queue, every tenant's, records and all
-- (bounded work per call: the caller calls again while a full batch went). Delayed
-- and running jobs of the queue are left alone.
-- KEYS[1] the queue's set of tenants with ready jobs (`q:{queue}:ringset`)
-- ARGV: 1 key base, 2 queue, 3 batch
-- Returns how many jobs were removed.
local base, queue, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])
local removed = 0
for _, tenant in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local set = base .. 'q:' .. queue .. ':t:' .. tenant
  local ids = redis.call('ZRANGE', set, 0, batch - removed - 1)
  if #ids > 0 then
    for _, id in ipairs(ids) do
      redis.call('UNLINK', base .. 'j:' .. id)
    end
    redis.call('ZREM', set, unpack(ids))
    removed = removed + #ids
  end
  if removed >= batch then
    break
  end
end
return removed
