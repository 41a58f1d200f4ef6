-- GCRA over several quotas at once, all or nothing: the request is admitted only if
-- every enforced quota admits it, and then (only then) every admitting quota is
-- charged. A rejected request consumes from none of them. Shadow quotas are
-- evaluated and charged like the others but never reject.
--
-- Time is Redis's own clock (TIME), so app instances with skewed clocks agree.
-- State per quota: the theoretical arrival time (TAT) in microseconds, as a string,
-- expiring when it no longer differs from a fresh key.
--
-- KEYS[i]          the state of quota i (all keys share one hash-tag slot)
-- ARGV[4(i-1)+1]   emission interval of quota i, microseconds (period / count)
-- ARGV[4(i-1)+2]   burst of quota i (requests admitted at once)
-- ARGV[4(i-1)+3]   cost of this request for quota i
-- ARGV[4(i-1)+4]   '1' when quota i is in shadow mode, '0' otherwise
--
-- Returns { admitted (1|0), then per quota i: allowed (1|0), remaining (requests
-- of cost 1 still admissible now), reset_ms, retry_ms, free_ms }
--   reset_ms  allowed: until the quota is whole again; rejected: until this request
--             would be admitted (the same as retry_ms)
--   retry_ms  until this request would be admitted (0 when allowed; -1 when its cost
--             exceeds the burst and it never can be)
--   free_ms   until a request of cost 1 would be admitted (for the local pre-check)

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = { 0 }
local charge = {}
local rejected = false

local function ms(us)
  if us <= 0 then return 0 end
  return math.ceil(us / 1000)
end

for i = 1, #KEYS do
  local base = (i - 1) * 4
  local interval = tonumber(ARGV[base + 1])
  local burst = tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 3])
  local shadow = ARGV[base + 4] == '1'
  local tau = interval * burst

  -- A missing or corrupt state reads as a fresh key.
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - tau
  local free_ms = ms(tat + interval - tau - now)

  if cost <= burst and allow_at <= now then
    charge[i] = new_tat
    local remaining = math.floor((now + tau - new_tat) / interval)
    table.insert(out, 1)
    table.insert(out, remaining)
    table.insert(out, ms(new_tat - now))
    table.insert(out, 0)
    table.insert(out, free_ms)
  else
    if not shadow then rejected = true end
    local remaining = math.floor((now + tau - tat) / interval)
    if remaining < 0 then remaining = 0 end
    local retry = -1
    if cost <= burst then retry = ms(allow_at - now) end
    table.insert(out, 0)
    table.insert(out, remaining)
    table.insert(out, retry)
    table.insert(out, retry)
    table.insert(out, free_ms)
  end
end

if not rejected then
  for i = 1, #KEYS do
    local new_tat = charge[i]
    if new_tat then
      redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', ms(new_tat - now) + 1)
    end
  end
  out[1] = 1
end

return out
