-- A request admitted under a ticket has completed: re-stamp its sliding-window charges at
-- the completion time (mirrors algorithms.settle). A charge no longer logged (it outlived
-- its hold and expired) is logged again, and the pool's running sum grows by its weight.
--
-- KEYS[1+2(i-1)+0..1]  pool i: state (sorted set of '<ticket>:<weight>'), aux (sum, seq)
-- ARGV[1]              '' for Redis TIME; a time in seconds only in the contract tests
-- ARGV[2]              number of pools n
-- ARGV[3]              the ticket the charges were held under
-- ARGV[4+2(i-1)+0..1]  pool i: window, weight

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local n = tonumber(ARGV[2])
local ticket = ARGV[3]

local function fmt(x) return string.format('%.17g', x) end

for i = 1, n do
  local b = 4 + 2 * (i - 1)
  local window, weight = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
  local key, aux = KEYS[1 + 2 * (i - 1)], KEYS[2 + 2 * (i - 1)]
  -- the purge acquire.lua does, so that the running sum stays the set's
  local horizon = now - window
  local total = tonumber(redis.call('HGET', aux, 'sum') or '0')
  local expired = redis.call('ZRANGEBYSCORE', key, '-inf', fmt(horizon))
  for _, member in ipairs(expired) do
    total = total - tonumber(string.match(member, ':(.+)$'))
  end
  if redis.call('ZCARD', key) == #expired then total = 0 end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(horizon)) end
  if redis.call('ZADD', key, fmt(now), ticket .. ':' .. fmt(weight)) == 1 then
    total = total + weight
  end
  redis.call('HSET', aux, 'sum', fmt(total))
  local ttl = math.ceil(window * 1000) + 1000
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  if redis.call('PTTL', aux) < ttl then redis.call('PEXPIRE', aux, ttl) end
end
return n
