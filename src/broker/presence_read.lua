-- socketshark: a channel's present members (issue 14), without the expired ones (a node that
-- died stops refreshing its members, which then expire here).
-- KEYS as in presence_add.lua; ARGV[1] = now (unix seconds). Returns the members' info JSON.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, m in ipairs(expired) do
  redis.call('HDEL', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
end
return redis.call('HVALS', KEYS[1])
