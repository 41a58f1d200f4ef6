-- Stores a result unless a SUCCESS is stored already, and publishes it on the
-- key's channel (Celery's Redis backend). KEYS: the meta key. ARGV: the JSON,
-- its time to live in seconds.
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, meta = pcall(cjson.decode, cur)
  if ok and type(meta) == 'table' and meta.status == 'SUCCESS' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
