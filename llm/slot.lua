-- Take or give back one slot of a fleet-wide semaphore: a sorted set of holders scored by
-- their lease's expiry (ms, Redis clock). Expired leases are dropped first, so a holder
-- that died frees its slot when its lease runs out.
-- KEYS[1] the slots; ARGV: holder, "take" | "give", limit, lease ms
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local key, holder, op = KEYS[1], ARGV[1], ARGV[2]
if op == 'give' then
  return redis.call('ZREM', key, holder)
end
local limit, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZSCORE', key, holder) or redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now + lease, holder)
  if redis.call('PTTL', key) < lease then
    redis.call('PEXPIRE', key, lease)
  end
  return 1
end
return 0
