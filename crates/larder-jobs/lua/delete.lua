-- Deletes a job that no worker holds: out of its ready set, its queue's delayed,
-- retrying or dead set, and its record and completion signal gone. A running job is
-- left alone (revoke it first: its worker must stop).
-- KEYS[1] job hash   KEYS[2] done list
-- ARGV: 1 key base, 2 id
-- Returns 'DELETED', 'RUNNING' or 'MISSING'.
local base, id = ARGV[1], ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'state', 'd', 'run')
if not f[1] then
  return 'MISSING'
end
if f[3] and f[3] ~= '' then
  return 'RUNNING'
end
local queue = unqueue(base, id, f[2])
if queue then
  redis.call('ZREM', qset(base, queue, 'dead'), id)
end
redis.call('ZREM', base .. 'dead', id)
redis.call('UNLINK', KEYS[1], KEYS[2])
return 'DELETED'
