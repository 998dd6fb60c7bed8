-- Start (or extend, never shorten) a cooldown: KEYS[1] the cooldown key, ARGV[1] its
-- length in milliseconds, ARGV[2] a reason kept as the value. Returns the milliseconds left.
local left = redis.call('PTTL', KEYS[1])
local wanted = tonumber(ARGV[1])
if left < wanted then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', wanted)
  return wanted
end
return left
