-- Enqueues a batch of jobs in one call, each at most once per id.
-- KEYS[1] sequence
-- ARGV: 1 key base, 2 job count, 3 one character per job: '1' when its id came from
--       the caller (checked: an id enqueued twice makes one job), '0' when the
--       client generated it (a random UUID: no check, one call less per job),
--       then per job 8 fields:
--       id, d (see lib.lua), args, queue, tenant, priority, eta ms, expires ms
-- A job is one hash (see lib.lua for its fields). The sorted-set entries of the
-- batch are added with one variadic ZADD per set.
-- Returns one entry per job: 1 enqueued, 0 the id was taken.
local now = now_ms()
local base, n, checked = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local seq = redis.call('INCRBY', KEYS[1], ARGV[2]) - n
local out = {}
local ready = {}   -- ready set key -> {score, id, ...}
local rings = {}   -- ready set key -> {queue, tenant}
local delayed = {} -- queue -> {due, id, ...}
local named = {}   -- queue names of the batch, for the `queues` set
for j = 0, n - 1 do
  local o = 3 + j * 8
  local id, queue, tenant, prio = ARGV[o + 1], ARGV[o + 4], ARGV[o + 5], tonumber(ARGV[o + 6])
  local jkey = base .. 'j:' .. id
  if string.byte(checked, j + 1) == 49 and redis.call('EXISTS', jkey) == 1 then
    out[#out + 1] = 0
  else
    local eta, expires = tonumber(ARGV[o + 7]), ARGV[o + 8]
    local f = {'d', ARGV[o + 2], 'a', ARGV[o + 3], 'state', 'PENDING'}
    if expires ~= '0' then
      f[#f + 1] = 'expires'
      f[#f + 1] = expires
    end
    if eta > now then
      f[#f + 1] = 'eta'
      f[#f + 1] = ARGV[o + 7]
      local z = delayed[queue]
      if not z then
        z = {}
        delayed[queue] = z
      end
      z[#z + 1] = ARGV[o + 7]
      z[#z + 1] = id
    else
      seq = seq + 1
      local qkey = base .. 'q:' .. queue .. ':t:' .. tenant
      local z = ready[qkey]
      if not z then
        z = {}
        ready[qkey] = z
        rings[qkey] = {queue, tenant}
      end
      z[#z + 1] = ready_score(prio, seq)
      z[#z + 1] = id
    end
    redis.call('HSET', jkey, unpack(f))
    named[queue] = true
    out[#out + 1] = 1
  end
end
for queue, z in pairs(delayed) do
  redis.call('ZADD', qset(base, queue, 'delayed'), unpack(z))
end
for queue, _ in pairs(named) do
  redis.call('SADD', base .. 'queues', queue)
end
local woken = {}
for qkey, z in pairs(ready) do
  redis.call('ZADD', qkey, unpack(z))
  local queue, tenant = rings[qkey][1], rings[qkey][2]
  join_ring(base, queue, tenant)
  woken[queue] = true
end
for queue, _ in pairs(woken) do
  wake(base, queue)
end
return out
