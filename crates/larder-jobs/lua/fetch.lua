-- Moves up to N ready jobs of one queue into the in-flight set, each with a lease
-- and a fencing token, serving tenants round-robin (one job per tenant per turn).
-- KEYS[1] ring (list of tenants with ready jobs)   KEYS[2] ring set   KEYS[3] in-flight
-- ARGV: 1 key base, 2 queue, 3 N, 4 lease ms, 5 worker id, 6 token prefix,
--       7 the state fetched jobs take: 'STARTED' (the worker runs them at once; it only
--       fetches for free slots) or 'RECEIVED' (started-tracking off)
-- Returns a flat list: id, token, task, args, tenant, attempts, max retries, timeout
-- ms, deliveries — nine entries per job.
local now = now_ms()
local base, queue, n, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local got = 0
local budget = redis.call('LLEN', KEYS[1]) + n * 2
while got < n and budget > 0 do
  budget = budget - 1
  local tenant = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not tenant then
    break
  end
  local qkey = base .. 'q:' .. queue .. ':t:' .. tenant
  local popped = redis.call('ZPOPMIN', qkey)
  if #popped == 0 then
    -- The tenant's set ran empty on an earlier turn: leave the ring.
    redis.call('LREM', KEYS[1], 0, tenant)
    redis.call('SREM', KEYS[2], tenant)
  else
    local id = popped[1]
    local jkey = base .. 'j:' .. id
    local f = redis.call('HMGET', jkey, 'state', 'expires', 'task', 'args', 'attempts',
      'max_retries', 'timeout', 'deliveries', 'ttl')
    local expires = tonumber(f[2]) or 0
    if not f[1] or f[1] == 'REVOKED' then
      -- gone or revoked while queued: nothing to run
    elseif expires > 0 and expires <= now then
      redis.call('HSET', jkey, 'state', 'REVOKED', 'error', 'expired before it started',
        'finished', now)
      redis.call('PEXPIRE', jkey, tonumber(f[9]))
      local done = base .. 'done:' .. id
      redis.call('RPUSH', done, 'REVOKED')
      redis.call('PEXPIRE', done, tonumber(f[9]))
    else
      local token = ARGV[6] .. ':' .. id
      local deliveries = (tonumber(f[8]) or 0) + 1
      redis.call('HSET', jkey, 'state', ARGV[7], 'token', token, 'worker', ARGV[5],
        'deliveries', deliveries, 'received', now)
      if ARGV[7] == 'STARTED' then
        redis.call('HSET', jkey, 'started', now)
      end
      redis.call('ZADD', KEYS[3], now + lease, id)
      got = got + 1
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = f[3]
      out[#out + 1] = f[4]
      out[#out + 1] = tenant
      out[#out + 1] = f[5]
      out[#out + 1] = f[6]
      out[#out + 1] = f[7]
      out[#out + 1] = deliveries
    end
  end
end
return out
