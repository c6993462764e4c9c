-- Store a shard's peak and day-start blobs computed by the monitor, unless they changed
-- since the monitor read them (an account upsert may have overridden a slot).
-- KEYS: 1 hwm blob, 2 day blob, 3 day id, 4 blob version
-- ARGV: 1 version read ('' none), 2 hwm blob ('' unchanged), 3 day blob ('' unchanged),
--       4 day id
-- Returns the new version, or false when the blobs moved under us (retry next tick).
if (redis.call('GET', KEYS[4]) or '') ~= ARGV[1] then return false end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2]) end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[3], ARGV[4])
end
return redis.call('INCR', KEYS[4])
