-- Moves due entries of a sorted set (delayed jobs whose time came, or in-flight
-- jobs whose lease expired: their worker died) back to their queues, at most LIMIT
-- per call; callers repeat while a full batch moved, so any backlog drains.
-- KEYS[1] the sorted set   KEYS[2] sequence
-- ARGV: 1 key base, 2 limit, 3 mode ('promote' or 'reap')
-- Returns the number of entries taken off the set.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base = ARGV[1]
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local jkey = base .. 'j:' .. id
  local f = redis.call('HMGET', jkey, 'queue', 'tenant', 'prio', 'state')
  if f[1] and f[4] ~= 'REVOKED' and f[4] ~= 'SUCCESS' and f[4] ~= 'FAILURE' then
    if ARGV[3] == 'reap' then
      redis.call('HDEL', jkey, 'token')
    end
    redis.call('HSET', jkey, 'state', 'PENDING')
    local seq = redis.call('INCR', KEYS[2])
    redis.call('ZADD', base .. 'q:' .. f[1] .. ':t:' .. f[2], -tonumber(f[3]) * 1099511627776 + seq, id)
    if redis.call('SADD', base .. 'q:' .. f[1] .. ':ringset', f[2]) == 1 then
      redis.call('RPUSH', base .. 'q:' .. f[1] .. ':ring', f[2])
    end
    redis.call('LPUSH', base .. 'q:' .. f[1] .. ':wake', '1')
    redis.call('LTRIM', base .. 'q:' .. f[1] .. ':wake', 0, 0)
  elseif f[1] and f[4] == 'REVOKED' and ARGV[3] == 'reap' then
    -- A revoked job whose worker died: it ends revoked.
    redis.call('HDEL', jkey, 'token')
  end
end
return #due
