-- The compare of the swap: no ended session, the stored refresh token, then the fence.
-- KEYS: tokens, fence, lock, channel. ARGV: expected refresh token ('' for none), fence ('' for
-- none), then the new tokens for write.lua.
if redis.call('HEXISTS', KEYS[1], 'x') == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local stored = redis.call('HGET', KEYS[1], 'r') or ''
if stored ~= ARGV[1] then
  return {0, redis.call('HGETALL', KEYS[1])}
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {0, redis.call('HGETALL', KEYS[1])}
end
