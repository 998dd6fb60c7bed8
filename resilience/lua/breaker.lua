-- One circuit breaker shared by the fleet; every transition is this one atomic script.
-- KEYS[1]  the breaker's hash (state, failures, window_start, opened_at, trial_until, trips)
-- ARGV[1]  op: 'allow' | 'success' | 'failure' | 'release' | 'state' | 'peek' ('allow'
--          without taking the half-open trial: would a call be refused now?; 'release': the
--          trial's caller gave up before an answer, so the next caller may try at once)
-- ARGV[2]  failure_threshold   ARGV[3] recovery_timeout (s)   ARGV[4] failure_window (s)
-- ARGV[5]  trial_timeout (s): how long one half-open trial may take before another is allowed
-- ARGV[6]  '1' when the reporting call was the half-open trial (only the trial closes it)
-- Returns {allowed 0/1, state, retry_after, transition ('' or 'a->b'), trips}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key, op = KEYS[1], ARGV[1]
local threshold, recovery = tonumber(ARGV[2]), tonumber(ARGV[3])
local window, trial = tonumber(ARGV[4]), tonumber(ARGV[5])
local function fmt(x) return string.format('%.17g', x) end
local function get(field, default)
  local v = redis.call('HGET', key, field)
  if v then return v end
  return default
end
local state = get('state', 'closed')
local trips = tonumber(get('trips', '0'))
local function reply(allowed, st, wait, transition)
  redis.call('PEXPIRE', key, math.ceil((recovery + window + trial) * 1000) + 86400000)
  return {allowed, st, fmt(wait), transition, trips}
end
local function open_now(from)
  trips = trips + 1
  redis.call('HSET', key, 'state', 'open', 'opened_at', fmt(now), 'failures', 0, 'trips', trips)
  return reply(0, 'open', recovery, from .. '->open')
end

if op == 'state' then
  return reply(state == 'closed' and 1 or 0, state, 0, '')
elseif op == 'peek' then
  if state == 'open' then
    local reopen = tonumber(get('opened_at', '0')) + recovery
    if now < reopen then return reply(0, 'open', reopen - now, '') end
  elseif state == 'half_open' then
    local trial_until = tonumber(get('trial_until', '0'))
    if now < trial_until then return reply(0, 'half_open', trial_until - now, '') end
  end
  return reply(1, state, 0, '')
elseif op == 'allow' then
  if state == 'closed' then return reply(1, 'closed', 0, '') end
  if state == 'open' then
    local reopen = tonumber(get('opened_at', '0')) + recovery
    if now < reopen then return reply(0, 'open', reopen - now, '') end
    redis.call('HSET', key, 'state', 'half_open', 'trial_until', fmt(now + trial))
    return reply(1, 'half_open', 0, 'open->half_open')
  end
  local trial_until = tonumber(get('trial_until', '0'))
  if now < trial_until then return reply(0, 'half_open', trial_until - now, '') end
  redis.call('HSET', key, 'trial_until', fmt(now + trial))  -- the last trial never reported
  return reply(1, 'half_open', 0, '')
elseif op == 'success' then
  if state == 'half_open' and ARGV[6] == '1' then
    redis.call('HSET', key, 'state', 'closed', 'failures', 0, 'window_start', fmt(now))
    return reply(1, 'closed', 0, 'half_open->closed')
  end
  return reply(state == 'closed' and 1 or 0, state, 0, '')
elseif op == 'release' then
  if state == 'half_open' and ARGV[6] == '1' then redis.call('HSET', key, 'trial_until', '0') end
  return reply(state == 'closed' and 1 or 0, state, 0, '')
elseif op == 'failure' then
  if state == 'half_open' then return open_now('half_open') end
  if state == 'open' then return reply(0, 'open', 0, '') end
  local start = tonumber(get('window_start', '0'))
  local failures = tonumber(get('failures', '0'))
  if now - start > window then start, failures = now, 0 end
  failures = failures + 1
  if failures >= threshold then return open_now('closed') end
  redis.call('HSET', key, 'failures', failures, 'window_start', fmt(start))
  return reply(1, 'closed', 0, '')
end
return redis.error_reply('unknown breaker op ' .. op)
