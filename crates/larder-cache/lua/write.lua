-- Writes a cache entry only if the tenant's and module's invalidation markers are
-- what the reader saw before calling the origin; creates missing markers.
--
-- KEYS[1]  tenant marker key
-- KEYS[2]  module marker key
-- KEYS[3]  entry key
-- ARGV[1]  tenant marker the reader saw ('' when it was missing)
-- ARGV[2]  module marker the reader saw ('' when it was missing)
-- ARGV[3]  fresh marker to create when one is missing (unique, never reused)
-- ARGV[4]  header tail: "<created-ms> <fresh-until-ms> <stale-until-ms>"
-- ARGV[5]  payload
-- ARGV[6]  time to live in Redis, milliseconds
-- ARGV[7]  a marker's time to live, milliseconds (at least ARGV[6])
--
-- Returns 1 when written, 0 when an invalidation happened since the read (the value
-- may be stale, so it is not stored).
--
-- A marker outlives every entry it guards: one created here lives ARGV[7], and one
-- that would expire before the entry is given ARGV[7] again (a marker of an older
-- release, without expiry, gets one too).
local function check(key, seen)
  local current = redis.call('GET', key)
  if not current then
    if seen ~= '' then
      return nil
    end
    redis.call('SET', key, ARGV[3], 'PX', ARGV[7])
    return ARGV[3]
  end
  if current ~= seen then
    return nil
  end
  if redis.call('PTTL', key) < tonumber(ARGV[6]) then
    redis.call('PEXPIRE', key, ARGV[7])
  end
  return current
end

local t = check(KEYS[1], ARGV[1])
if not t then
  return 0
end
local m = check(KEYS[2], ARGV[2])
if not m then
  return 0
end
redis.call('SET', KEYS[3], 'LC1 ' .. t .. ' ' .. m .. ' ' .. ARGV[4] .. '\n' .. ARGV[5], 'PX', ARGV[6])
return 1
