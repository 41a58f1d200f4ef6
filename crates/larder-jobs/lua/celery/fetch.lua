-- Takes the first message of the first non-empty list and records its delivery
-- in `unacked`/`unacked_index`, atomically. KEYS: the lists in the order they
-- are served, then `unacked_index`, `unacked`. ARGV: now (seconds), a tag for
-- a message without one, then each list's queue name.
local n = #KEYS - 2
for i = 1, n do
  local msg = redis.call('RPOP', KEYS[i])
  if msg then
    local tag = ARGV[2]
    local ok, env = pcall(cjson.decode, msg)
    if ok and type(env) == 'table' and type(env.properties) == 'table'
        and type(env.properties.delivery_tag) == 'string' then
      tag = env.properties.delivery_tag
    end
    local queue = ARGV[2 + i]
    redis.call('ZADD', KEYS[n + 1], ARGV[1], tag)
    redis.call('HSET', KEYS[n + 2], tag, '[' .. msg .. ', "", ' .. cjson.encode(queue) .. ']')
    return {msg, tag, queue}
  end
end
return false
