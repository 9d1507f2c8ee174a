-- Ends the session for every process: the tokens go, a mark that the session ended stays
-- until the next save. KEYS: tokens, fence, lock, channel.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'x', 'ended')
return 1
