-- Store a cache entry with a TTL and keep the cache under its size bound (oldest write out
-- first; entries that already expired leave the index without counting as evictions).
-- KEYS[1] the entry   KEYS[2] the index (sorted set: entry key -> write sequence)
-- KEYS[3] the write sequence counter
-- ARGV[1] value   ARGV[2] ttl in ms   ARGV[3] max entries
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), KEYS[1])
local evicted = 0
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
while over > 0 do
  local oldest = redis.call('ZPOPMIN', KEYS[2])
  evicted = evicted + redis.call('DEL', oldest[1])
  over = over - 1
end
return evicted
