-- Per-account circuit breaker: count hard violations in a sliding window, shared by
-- every worker. One call per shard and tick for all its violating accounts.
-- ARGV: 1 window (ms), 2 threshold, 3 tick id (a tick counts once per account),
--       then account ids. Returns the accounts that reached the threshold.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local tripped = {}
for i = 4, #ARGV do
  local key = 'risk:cb:' .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, window)
  if redis.call('ZCARD', key) >= threshold then tripped[#tripped + 1] = ARGV[i] end
end
return tripped
