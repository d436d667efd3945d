-- socketshark: presence entries (issue 14). Adds or refreshes members of one channel.
-- KEYS[1] = socketshark:presence:{CHANNEL}      (hash: member id -> info JSON)
-- KEYS[2] = socketshark:presence-exp:{CHANNEL}  (sorted set: member id -> expiry, unix seconds)
-- ARGV[1] = expiry (unix seconds); ARGV[2] = key ttl (seconds); then pairs: member id, info.
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
