-- Join the open batch of a request kind, opening one if none is open.
-- KEYS[1] the kind's open-batch pointer (string: batch id, PX = the batch window)
-- ARGV[1] key prefix of the kind's batches (same hash tag as KEYS[1])
-- ARGV[2] id for a new batch   ARGV[3] the item (a symbol)   ARGV[4] max items per batch
-- ARGV[5] window in ms         ARGV[6] lease in ms (leader liveness, member list TTL)
-- Returns {batch id, 1 if the caller leads it, items so far, ms until the window closes}.
-- The pointer expiring closes the batch at the window's end; a full batch closes at once.
local id = redis.call('GET', KEYS[1])
local leader = 0
if not id then
  id = ARGV[2]
  leader = 1
  redis.call('SET', KEYS[1], id, 'PX', ARGV[5])
  redis.call('SET', ARGV[1] .. id .. ':lead', '1', 'PX', ARGV[6])
end
local members = ARGV[1] .. id .. ':members'
local size = redis.call('RPUSH', members, ARGV[3])
redis.call('PEXPIRE', members, ARGV[6])
local left = redis.call('PTTL', KEYS[1])
if size >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  left = 0
end
return {id, leader, size, left}
