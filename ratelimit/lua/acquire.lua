-- Decide, and if allowed charge, one request's weight against every pool it touches.
-- Numbers given to redis.call are formatted by Lua with only 14 significant digits, which
-- at Unix-epoch seconds is 0.1 ms: every time or score is passed through fmt() instead.
-- The arithmetic mirrors ratelimit/algorithms.py line for line; the contract tests hold
-- them to the same decisions.
--
-- KEYS[1]              exchange-wide cooldown (string with a PX TTL)
-- KEYS[2+3(i-1)+0..2]  pool i: state, aux (sliding window's sum and sequence), cooldown
-- ARGV[1]              '' to read the clock from Redis TIME (always, in production);
--                      a time in seconds only in the contract tests
-- ARGV[2]              number of pools n
-- ARGV[3]              '1' to charge when allowed, '0' to only check
-- ARGV[4]              ticket: '' for none; else sliding-window charges are held under it
--                      (member '<ticket>:<weight>', stamped now + hold) until settle.lua
--                      re-stamps them when the request completes
-- ARGV[5]              hold, seconds (with a ticket)
-- ARGV[6+6(i-1)+0..5]  pool i: algorithm, limit, window, rate, weight, reserve
--
-- Returns {allowed 0/1, retry_after, now, denied pool index (0 = none), cooldown 0/1,
--          remaining_1 .. remaining_n}; numbers as strings so fractions survive.

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local n = tonumber(ARGV[2])
local do_charge = ARGV[3] == '1'
local ticket = ARGV[4]
local hold = ticket ~= '' and tonumber(ARGV[5]) or 0
local INF = math.huge

local function fmt(x)
  if x == INF then return 'inf' end
  return string.format('%.17g', x)
end

local function cooldown_left(key)
  local ms = redis.call('PTTL', key)
  if ms > 0 then return ms / 1000 end
  return 0
end

-- one EXISTS over every cooldown key on the common path; PTTLs only when one is set
local cooldown_keys = {KEYS[1]}
for i = 1, n do cooldown_keys[i + 1] = KEYS[2 + 3 * (i - 1) + 2] end
local cooldown = 0
if redis.call('EXISTS', unpack(cooldown_keys)) > 0 then
  for _, key in ipairs(cooldown_keys) do
    local left = cooldown_left(key)
    if left > cooldown then cooldown = left end
  end
end
if cooldown > 0 then
  local reply = {0, fmt(cooldown), fmt(now), 0, 1}
  for i = 1, n do reply[5 + i] = '' end
  return reply
end

local function pool(i)
  local b = 6 + 6 * (i - 1)
  return {
    algo = ARGV[b], limit = tonumber(ARGV[b + 1]), window = tonumber(ARGV[b + 2]),
    rate = tonumber(ARGV[b + 3]), weight = tonumber(ARGV[b + 4]), reserve = tonumber(ARGV[b + 5]),
    key = KEYS[2 + 3 * (i - 1)], aux = KEYS[2 + 3 * (i - 1) + 1],
  }
end

-- Load state and purge expired sliding-window entries (a normalisation, not a charge).
local function load(p)
  if p.algo == 'token_bucket' or p.algo == 'leaky_bucket' then
    local field = p.algo == 'token_bucket' and 'tokens' or 'level'
    local v = redis.call('HMGET', p.key, field, 'ts')
    if v[1] then
      local elapsed = math.max(0, now - tonumber(v[2]))
      if p.algo == 'token_bucket' then
        p.value = math.min(p.limit, tonumber(v[1]) + elapsed * p.rate)
      else
        p.value = math.max(0, tonumber(v[1]) - elapsed * p.rate)
      end
    else
      p.value = p.algo == 'token_bucket' and p.limit or 0
    end
  elseif p.algo == 'fixed_window' then
    p.window_id = math.floor(now / p.window)
    local v = redis.call('HMGET', p.key, 'window_id', 'count')
    if v[1] and tonumber(v[1]) == p.window_id then
      p.value = tonumber(v[2])
    else
      p.value, p.new_window = 0, true
    end
  else
    local horizon = now - p.window
    local total = tonumber(redis.call('HGET', p.aux, 'sum') or '0')
    local expired = redis.call('ZRANGEBYSCORE', p.key, '-inf', fmt(horizon))
    for _, member in ipairs(expired) do
      total = total - tonumber(string.match(member, ':(.+)$'))
    end
    if redis.call('ZCARD', p.key) == #expired then total = 0 end
    if #expired > 0 then
      -- the purge and the running sum change together, even when nothing is charged
      redis.call('ZREMRANGEBYSCORE', p.key, '-inf', fmt(horizon))
      redis.call('HSET', p.aux, 'sum', fmt(total))
    end
    p.value = total
    p.horizon = horizon
  end
end

-- Returns allowed, retry_after, remaining (mirrors algorithms.check).
local function check(p)
  local need = p.weight + p.reserve
  if p.algo == 'token_bucket' then
    if p.value >= need then return true, 0, p.value - p.weight end
    if need > p.limit then return false, INF, p.value end
    return false, (need - p.value) / p.rate, p.value
  elseif p.algo == 'leaky_bucket' then
    if p.value + need <= p.limit then return true, 0, p.limit - p.value - p.weight end
    if need > p.limit then return false, INF, p.limit - p.value end
    return false, (p.value + need - p.limit) / p.rate, p.limit - p.value
  elseif p.algo == 'fixed_window' then
    if p.value + need <= p.limit then return true, 0, p.limit - p.value - p.weight end
    if need > p.limit then return false, INF, p.limit - p.value end
    return false, (p.window_id + 1) * p.window - now, p.limit - p.value
  end
  if p.value + need <= p.limit then return true, 0, p.limit - p.value - p.weight end
  if need > p.limit then return false, INF, p.limit - p.value end
  local freed, offset = 0, 0
  while true do
    local batch = redis.call('ZRANGEBYSCORE', p.key, '(' .. fmt(p.horizon), '+inf',
                             'WITHSCORES', 'LIMIT', offset, 128)
    if #batch == 0 then return false, INF, p.limit - p.value end
    for j = 1, #batch, 2 do
      freed = freed + tonumber(string.match(batch[j], ':(.+)$'))
      if p.value - freed + need <= p.limit then
        -- a held charge expires one window after it is settled, at the earliest now
        return false, math.min(tonumber(batch[j + 1]), now) + p.window - now, p.limit - p.value
      end
    end
    offset = offset + 128
  end
end

local function charge(p)
  if p.algo == 'token_bucket' or p.algo == 'leaky_bucket' then
    local field, value, ttl
    if p.algo == 'token_bucket' then
      field, value = 'tokens', p.value - p.weight
      ttl = (p.limit - value) / p.rate
    else
      field, value = 'level', p.value + p.weight
      ttl = value / p.rate
    end
    redis.call('HSET', p.key, field, fmt(value), 'ts', fmt(now))
    redis.call('PEXPIRE', p.key, math.ceil(ttl * 1000) + 1000)
  elseif p.algo == 'fixed_window' then
    redis.call('HSET', p.key, 'window_id', fmt(p.window_id), 'count', fmt(p.value + p.weight))
    if p.new_window then  -- the TTL is the window's end: set once, by its first charge
      redis.call('PEXPIRE', p.key, math.ceil(((p.window_id + 1) * p.window - now) * 1000) + 1000)
    end
  else
    local id = ticket
    if id == '' then id = redis.call('HINCRBY', p.aux, 'seq', 1) end
    redis.call('ZADD', p.key, fmt(now + hold), id .. ':' .. fmt(p.weight))
    redis.call('HSET', p.aux, 'sum', fmt(p.value + p.weight))
    -- only lengthened: another process's held charge may need longer than this one
    local ttl = math.ceil((p.window + hold) * 1000) + 1000
    if redis.call('PTTL', p.key) < ttl then redis.call('PEXPIRE', p.key, ttl) end
    if redis.call('PTTL', p.aux) < ttl then redis.call('PEXPIRE', p.aux, ttl) end
  end
end

local pools, remaining = {}, {}
local allowed, retry_after, denied = true, 0, 0
for i = 1, n do
  local p = pool(i)
  load(p)
  local ok, wait, left = check(p)
  pools[i], remaining[i] = p, left
  if not ok then
    allowed = false
    if wait > retry_after or denied == 0 then retry_after, denied = math.max(retry_after, wait), i end
  end
end
if allowed and do_charge then
  for i = 1, n do charge(pools[i]) end
end
local reply = {allowed and 1 or 0, fmt(retry_after), fmt(now), denied, 0}
for i = 1, n do reply[5 + i] = fmt(remaining[i]) end
return reply
