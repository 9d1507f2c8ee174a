-- Deletes the lease only if this owner holds it, and tells the waiters.
-- KEYS: tokens, fence, lock, channel. ARGV: owner.
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', KEYS[4], 'released')
  return 1
end
return 0
