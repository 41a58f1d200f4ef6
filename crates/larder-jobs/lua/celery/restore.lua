-- Puts one delivery back on its list, once. KEYS: `unacked_index`, `unacked`,
-- the list. ARGV: the tag, the envelope (marked redelivered).
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('RPUSH', KEYS[3], ARGV[2])
  return 1
end
return 0
