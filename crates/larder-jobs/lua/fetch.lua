-- Moves up to N ready jobs of one queue into the in-flight set, each with a lease
-- and a fencing token, serving tenants round-robin: each turn takes from one tenant
-- at most its share of what is left to fetch (one job when several tenants wait for
-- few slots), so one tenant's backlog never starves another.
-- KEYS[1] ring (list of tenants with ready jobs)   KEYS[2] ring set
-- KEYS[3] the queue's in-flight set
-- ARGV: 1 key base, 2 queue, 3 N, 4 lease ms, 5 worker id, 6 token prefix,
--       7 the state fetched jobs take: 'STARTED' (the worker runs them at once; it only
--       fetches for free slots) or 'RECEIVED' (started-tracking off), 8 result ttl ms
-- Returns a flat list: id, token, d, args, attempts — five entries per job.
local now = now_ms()
local base, queue, n, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local state, ttl = ARGV[7], ARGV[8]
local held = '\t' .. ARGV[5] .. '\t' .. now .. '\t' .. queue
local lease_end = string.format('%d', now + lease) -- converted once, not per job
local out = {}
local leased = {}
local got = 0
-- The ring's length, kept here as tenants leave (this script is the only one that
-- shortens the ring, and nothing else runs while it does).
local tenants = redis.call('LLEN', KEYS[1])
local budget = tenants + n * 2
while got < n and budget > 0 and tenants > 0 do
  budget = budget - 1
  local tenant = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not tenant then
    break
  end
  local share = math.max(1, math.floor((n - got) / tenants))
  local qkey = base .. 'q:' .. queue .. ':t:' .. tenant
  -- The first `share` members, then their removal by rank: ZPOPMIN would reply with
  -- each member's score, formatted by snprintf per job.
  local popped = redis.call('ZRANGE', qkey, '0', share - 1)
  if #popped > 0 then
    redis.call('ZREMRANGEBYRANK', qkey, '0', #popped - 1)
  else
    -- The tenant's set ran empty on an earlier turn: leave the ring.
    tenants = tenants - redis.call('LREM', KEYS[1], '0', tenant)
    redis.call('SREM', KEYS[2], tenant)
  end
  for i = 1, #popped do
    local id = popped[i]
    local jkey = base .. 'j:' .. id
    local f = redis.call('HMGET', jkey, 'state', 'expires', 'd', 'a', 'attempts', 'revoked')
    local expires = tonumber(f[2]) or 0
    if not f[1] or f[1] == 'REVOKED' then
      -- gone or revoked while queued: nothing to run
    elseif f[6] == '1' then
      finish_revoked(base, jkey, id, now, ttl, 'revoked while running')
    elseif expires > 0 and expires <= now then
      redis.call('HSET', jkey, 'state', 'REVOKED', 'error', 'expired before it started',
        'finished', now)
      redis.call('PEXPIRE', jkey, ttl)
      signal(base, id, 'REVOKED', ttl)
    else
      local token = ARGV[6] .. ':' .. id
      redis.call('HSET', jkey, 'state', state, 'run', token .. held)
      leased[#leased + 1] = lease_end
      leased[#leased + 1] = id
      got = got + 1
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = f[3]
      out[#out + 1] = f[4]
      out[#out + 1] = f[5] or '0'
    end
  end
end
if #leased > 0 then
  redis.call('ZADD', KEYS[3], unpack(leased))
end
return out
