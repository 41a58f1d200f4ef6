-- Registers a waiter of a job, then reports the job's state: the completion script
-- signals `done:{id}` only for jobs with a waiter, and runs atomically, so either it
-- ran before this (the state returned is final) or it will see the flag.
-- KEYS[1] wait flag   KEYS[2] job hash
-- ARGV[1] flag lifetime, ms
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('HGET', KEYS[2], 'state')
