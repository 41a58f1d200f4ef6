-- Renews the leases of a worker's running jobs. Fenced: only jobs whose token still
-- matches are touched.
-- KEYS[1] the partition's `queues` set (unused: it routes the call to the node)
-- ARGV: 1 key base, 2 lease ms, then id, token pairs
-- Returns {revoked ids..., '|', lost ids...}: jobs revoked while running (cancel
-- them) and jobs whose lease was lost (another worker may run them: stop).
local now = now_ms()
local base, lease = ARGV[1], tonumber(ARGV[2])
local revoked, lost = {}, {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local jkey = base .. 'j:' .. id
  local f = redis.call('HMGET', jkey, 'run', 'revoked')
  if not holds(f[1], token) then
    lost[#lost + 1] = id
  else
    redis.call('ZADD', inflight_of(base, jkey, f[1]), 'XX', now + lease, id)
    if f[2] == '1' then
      revoked[#revoked + 1] = id
    end
  end
end
local out = revoked
out[#out + 1] = '|'
for _, id in ipairs(lost) do
  out[#out + 1] = id
end
return out
