-- Takes the lease when free; the same owner asking again gets it renewed, its fence back.
-- KEYS: tokens, fence, lock, channel. ARGV: owner, time to live in ms.
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2])) or 0
end
local left = redis.call('PTTL', KEYS[3])
if left == -1 then return -1000 end
if left < 0 then return 0 end
return -left
