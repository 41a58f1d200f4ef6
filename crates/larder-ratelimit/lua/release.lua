-- Refunds what a decision reserved on this slot, when another slot's quotas
-- rejected the request (Redis Cluster: a request's quotas keyed on different
-- things live in different slots, each decided by gcra.lua on its own).
--
-- KEYS[i]   the state of quota i (one slot)
-- ARGV[i]   the microseconds gcra.lua added to quota i's TAT for this request
--
-- Later requests' charges stay: only this request's share is taken back, and a
-- state that falls to the present is deleted (a missing key reads as fresh).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat then
    local back = tat - tonumber(ARGV[i])
    if back <= now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], string.format('%.0f', back), 'PX', math.ceil((back - now) / 1000) + 1)
    end
  end
end
return 1
