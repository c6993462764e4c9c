-- Write an account change computed by the caller, if nobody changed the account since
-- it was read (optimistic concurrency on the 'ver' field), together with its journal
-- record and a change notice for the monitor's shard cache. All or nothing.
-- KEYS: 1 account, 2 positions, 3 shard members, 4 shard change stream, 5 journal,
--       6 fill idempotency key ('' when not a fill), 7 hwm blob, 8 day-start blob,
--       9 set of accounts not ACTIVE, 10 version of the hwm/day blobs
-- ARGV: 1 expected ver ('' when the account must not exist yet), 2 account id,
--       3 change-stream max length, 4 fill id TTL (s), 5 journal JSON,
--       6 peak override ('' none), 7 day-start override ('' none),
--       8 new trading status ('' unchanged),
--       9 n account field pairs, then the pairs, then n position pairs to set, then the
--       pairs, then n position fields to delete, then the fields.
-- Returns {'OK', ver, slot}, {'RETRY'} or {'DUP'} (fill already applied).
local cur = redis.call('HGET', KEYS[1], 'ver')
if (cur or '') ~= ARGV[1] then return {'RETRY'} end
if KEYS[6] ~= '' then
  if not redis.call('SET', KEYS[6], '1', 'NX', 'EX', ARGV[4]) then return {'DUP'} end
end
local i = 9
local n = tonumber(ARGV[i])
local fields = {}
for j = 1, n * 2 do fields[j] = ARGV[i + j] end
i = i + n * 2 + 1
local ver = (tonumber(cur) or 0) + 1
fields[#fields + 1] = 'ver'
fields[#fields + 1] = tostring(ver)
local slot
if not cur then
  slot = redis.call('RPUSH', KEYS[3], ARGV[2]) - 1
  fields[#fields + 1] = 'slot'
  fields[#fields + 1] = tostring(slot)
else
  slot = tonumber(redis.call('HGET', KEYS[1], 'slot'))
end
redis.call('HSET', KEYS[1], unpack(fields))
n = tonumber(ARGV[i])
if n > 0 then
  local pos = {}
  for j = 1, n * 2 do pos[j] = ARGV[i + j] end
  redis.call('HSET', KEYS[2], unpack(pos))
end
i = i + n * 2 + 1
n = tonumber(ARGV[i])
if n > 0 then
  local gone = {}
  for j = 1, n do gone[j] = ARGV[i + j] end
  redis.call('HDEL', KEYS[2], unpack(gone))
end
-- An explicit peak or day-start replaces what the monitor had raised or reset.
local off = slot * 8
if ARGV[6] ~= '' and redis.call('STRLEN', KEYS[7]) >= off + 8 then
  redis.call('SETRANGE', KEYS[7], off, struct.pack('<d', tonumber(ARGV[6])))
  redis.call('INCR', KEYS[10])
end
if ARGV[7] ~= '' and redis.call('STRLEN', KEYS[8]) >= off + 8 then
  redis.call('SETRANGE', KEYS[8], off, struct.pack('<d', tonumber(ARGV[7])))
  redis.call('INCR', KEYS[10])
end
if ARGV[8] == 'ACTIVE' then
  redis.call('SREM', KEYS[9], ARGV[2])
elseif ARGV[8] ~= '' then
  redis.call('SADD', KEYS[9], ARGV[2])
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'a', ARGV[2])
redis.call('XADD', KEYS[5], '*', 'd', ARGV[5])
return {'OK', ver, slot}
