-- Act on a lease only while its holder still holds it (compare-and-act, atomically).
-- KEYS[1]: the lease. ARGV[1]: the value its holder wrote. ARGV[2]: extend | release |
-- replace. ARGV[3]: milliseconds (extend, replace). ARGV[4]: the new value (replace).
-- Returns 1 when the holder still held it and the action was taken, else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'extend' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if ARGV[2] == 'release' then
  return redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
return 1
