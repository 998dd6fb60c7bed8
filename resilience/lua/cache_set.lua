-- Store a cache entry with a TTL and keep the cache under its size bound (oldest out first).
-- KEYS[1] the entry   KEYS[2] the index (sorted set: entry key -> write time)
-- ARGV[1] value   ARGV[2] ttl in ms   ARGV[3] max entries
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now, KEYS[1])
-- entries that expired by TTL leave the index too
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
for _, key in ipairs(stale) do
  if redis.call('EXISTS', key) == 0 then redis.call('ZREM', KEYS[2], key) end
end
local evicted = 0
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  for _, key in ipairs(oldest) do
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[2], key)
    evicted = evicted + 1
  end
end
return evicted
