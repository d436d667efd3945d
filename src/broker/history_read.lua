-- socketshark: a channel's history position and the messages after an offset (issue 14).
-- KEYS as in history_publish.lua; ARGV[1] = offset (-1: the position only); ARGV[2] = an epoch
-- for a new history; ARGV[3] = ttl (seconds) of a history created here.
-- Returns {epoch, top offset, stamped messages after ARGV[1], oldest first...}.
if redis.call('HSETNX', KEYS[2], 'epoch', ARGV[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local top = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')
local reply = {epoch, top}
local since = tonumber(ARGV[1])
if since < 0 or since >= top then
  return reply
end
local entries = redis.call('LRANGE', KEYS[1], -(top - since), -1)
for _, e in ipairs(entries) do
  reply[#reply + 1] = e
end
return reply
