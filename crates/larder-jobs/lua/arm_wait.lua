-- Registers a waiter of a job, then reports the job's state: the completion script
-- signals `done:{id}` only for jobs whose `waited` field is set, and runs
-- atomically, so either it ran before this (the state returned is final) or it will
-- see the field. An unknown job is left alone (no hash is created for it).
-- KEYS[1] job hash
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  redis.call('HSET', KEYS[1], 'waited', '1')
end
return state
