-- Replaces the token hash with ARGV 3 to 6 (access, refresh, expiry in Unix ms, login name),
-- leaving out the empty ones.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'a', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'r', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'e', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 's', ARGV[6]) end
