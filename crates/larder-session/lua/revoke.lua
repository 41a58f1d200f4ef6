-- Revokes sessions of one user: deletes each record that still belongs to the user
-- and drops every given member from the user's index.
-- KEYS[1]     the user's session index
-- KEYS[2..n]  session records
-- ARGV[1]     user hash
-- ARGV[2..n]  the records' members in the index (same order as KEYS[2..n])
-- Returns the number of sessions deleted.
local n = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'u') == ARGV[1] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return n
