-- Pre-trade commit: keep the first decision of an order id and journal it for audit.
-- KEYS: 1 idempotency key, 2 platform state, 3 account, 4 audit stream
-- ARGV: 1 decision JSON, 2 idempotency TTL (s), 3 audit JSON, 4 "1" to re-check state,
--       5 platform state version read, 6 account status read
-- Returns {'OK'}, {'RETRY'} when an approval raced a state change, or {'DUP', first}.
-- Defines check_commit(KEYS, ARGV); the store appends the call (one order) or a loop over
-- consecutive groups of 4 keys and 6 arguments (a batch: one invocation).
--
-- The platform's state version is read once per invocation (a batch): nothing here
-- writes it, and an invocation is atomic.
local platform_ver = nil

local function check_commit(KEYS, ARGV)
  if ARGV[4] == '1' then
    if not platform_ver then platform_ver = redis.call('HGET', KEYS[2], 'ver') or '' end
    if platform_ver ~= ARGV[5] then return {'RETRY'} end
    if (redis.call('HGET', KEYS[3], 'status') or '') ~= ARGV[6] then return {'RETRY'} end
  end
  if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
    return {'DUP', redis.call('GET', KEYS[1])}
  end
  redis.call('XADD', KEYS[4], '*', 'd', ARGV[3])
  return {'OK'}
end
