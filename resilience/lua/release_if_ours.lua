-- Delete a lock (or a batch's open pointer) only if it still holds our token.
-- KEYS[1] the key   ARGV[1] our token
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
