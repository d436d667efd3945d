-- socketshark: publish with history (issue 14). Atomic: the offset is assigned here.
-- KEYS[1] = socketshark:history:{CHANNEL}       (list of stamped messages, oldest first)
-- KEYS[2] = socketshark:history-meta:{CHANNEL}  (hash: offset, epoch)
-- ARGV[1] = the message, a non-empty JSON object; ARGV[2] = history size; ARGV[3] = ttl
-- (seconds); ARGV[4] = an epoch for a new history (any short random string); ARGV[5] = CHANNEL;
-- ARGV[6] (optional) = the publishing command: PUBLISH (default) or SPUBLISH on Redis Cluster.
-- A CHANNEL with a hash tag of its own ({...}) keys its history as socketshark:history:CHANNEL.
-- Returns the message's offset.
local payload = ARGV[1]
if string.sub(payload, 1, 1) ~= '{' or string.find(payload, '^{%s*}') then
  return redis.error_reply('the message must be a non-empty JSON object')
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[4])
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local stamped = '{"_history":{"offset":' .. offset .. ',"epoch":"' .. epoch .. '"},'
  .. string.sub(payload, 2)
redis.call('RPUSH', KEYS[1], stamped)
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local command = (ARGV[6] == 'SPUBLISH') and 'SPUBLISH' or 'PUBLISH'
redis.call(command, ARGV[5], stamped)
return offset
