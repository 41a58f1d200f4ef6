-- Revokes sessions of one user: deletes each record that still belongs to the user
-- and drops every given member from the user's index.
-- KEYS[1]     the user's session index
-- KEYS[2]     the scope's live sessions (see write.lua)
-- KEYS[3..n]  session records
-- ARGV[1]     user hash
-- ARGV[2..]   the records' members in the index (ARGV[i] is KEYS[i + 1]'s)
-- Returns the number of sessions deleted.
local n = 0
for i = 3, #KEYS do
  local member = ARGV[i - 1]
  if redis.call('HGET', KEYS[i], 'u') == ARGV[1] then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[2], member)
    n = n + 1
  end
  redis.call('ZREM', KEYS[1], member)
end
return n
