-- Raise pools to the usage an exchange reported (mirrors algorithms.observe).
--
-- KEYS[1+2(i-1)+0..1]  pool i: state, aux
-- ARGV[1]              '' for Redis TIME; a time in seconds only in the contract tests
-- ARGV[2]              number of pools n
-- ARGV[3+5(i-1)+0..4]  pool i: algorithm, limit, window, rate, used

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local n = tonumber(ARGV[2])

local function fmt(x) return string.format('%.17g', x) end

for i = 1, n do
  local b = 3 + 5 * (i - 1)
  local algo, limit, window = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local rate, used = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local key, aux = KEYS[1 + 2 * (i - 1)], KEYS[2 + 2 * (i - 1)]
  if algo == 'token_bucket' then
    local v = redis.call('HMGET', key, 'tokens', 'ts')
    local tokens = limit
    if v[1] then tokens = math.min(limit, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate) end
    tokens = math.min(tokens, limit - used)
    redis.call('HSET', key, 'tokens', fmt(tokens), 'ts', fmt(now))
    redis.call('PEXPIRE', key, math.ceil((limit - tokens) / rate * 1000) + 1000)
  elseif algo == 'leaky_bucket' then
    local v = redis.call('HMGET', key, 'level', 'ts')
    local level = 0
    if v[1] then level = math.max(0, tonumber(v[1]) - math.max(0, now - tonumber(v[2])) * rate) end
    level = math.max(level, used)
    redis.call('HSET', key, 'level', fmt(level), 'ts', fmt(now))
    redis.call('PEXPIRE', key, math.ceil(level / rate * 1000) + 1000)
  elseif algo == 'fixed_window' then
    local window_id = math.floor(now / window)
    local v = redis.call('HMGET', key, 'window_id', 'count')
    local count = 0
    if v[1] and tonumber(v[1]) == window_id then count = tonumber(v[2]) end
    redis.call('HSET', key, 'window_id', fmt(window_id), 'count', fmt(math.max(count, used)))
    redis.call('PEXPIRE', key, math.ceil(((window_id + 1) * window - now) * 1000) + 1000)
  else
    local horizon = now - window
    local total = tonumber(redis.call('HGET', aux, 'sum') or '0')
    local expired = redis.call('ZRANGEBYSCORE', key, '-inf', fmt(horizon))
    for _, member in ipairs(expired) do
      total = total - tonumber(string.match(member, ':(.+)$'))
    end
    if #expired > 0 then redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(horizon)) end
    if redis.call('ZCARD', key) == 0 then total = 0 end
    if used > total then
      local seq = redis.call('HINCRBY', aux, 'seq', 1)
      redis.call('ZADD', key, fmt(now), seq .. ':' .. fmt(used - total))
      total = used
    end
    redis.call('HSET', aux, 'sum', fmt(total))
    -- never shorten a key's life: an in-flight entry (held ahead of now) may need longer
    local ttl = math.ceil(window * 1000) + 1000
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
    if redis.call('PTTL', aux) < ttl then redis.call('PEXPIRE', aux, ttl) end
  end
end
return n
