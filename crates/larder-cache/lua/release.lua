-- Releases a stampede lease only if it is still ours (it may have expired and been
-- taken by another instance meanwhile).
--
-- KEYS[1]  lease key
-- ARGV[1]  our token
--
-- Returns 1 when released, 0 when the lease was no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
