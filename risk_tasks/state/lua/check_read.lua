-- Pre-trade read: everything one decision needs, in one round trip.
-- KEYS: 1 idempotency key, 2 platform state, 3 account, 4 positions, 5 prices,
--       6 rate-limit window, 7 config version
-- ARGV: 1 order symbol, 2 rate window (ms), 3 unique member for this check,
--       4 shard key prefix ("risk:shard:")
-- Returns {1, decision} for a repeated order id; {2, state, state_ver, cfgver} for an
-- unknown account; otherwise {0, state, state_ver, cfgver, account, positions,
-- symbols, prices, orders_in_window, hwm, day_start, day_id}, where account holds the
-- values of the fields a check reads (codec.CHECK_FIELDS, in that order; nil if unset).
-- Defines check_read(KEYS, ARGV); the store appends the call (one order) or a loop over
-- consecutive groups of 7 keys and 4 arguments (a batch: one invocation).
--
-- An invocation is atomic and this script writes none of the platform state, the config
-- version, the prices or the day ids, so within one invocation (a batch) each is read
-- once, as is the clock: the caches below live for one invocation.
local platform, cfgver, now_ms = nil, nil, nil
local marks, dayids = {}, {}

local function check_read(KEYS, ARGV)
  local seen = redis.call('GET', KEYS[1])
  if seen then return {1, seen} end
  if not platform then
    platform = redis.call('HMGET', KEYS[2], 'state', 'ver')
    cfgver = redis.call('GET', KEYS[7]) or '0'
  end
  local st, cfg = platform, cfgver
  local acct = redis.call('HMGET', KEYS[3], 'balance', 'status', 'peak_equity',
                         'daily_start_equity', 'max_leverage', 'shard', 'slot')
  if not acct[1] then return {2, st[1] or '', st[2] or '', cfg} end
  local pos = redis.call('HGETALL', KEYS[4])
  local syms = {ARGV[1]}
  for i = 1, #pos, 2 do
    if pos[i] ~= ARGV[1] then syms[#syms + 1] = pos[i] end
  end
  local missing = {}
  for i = 1, #syms do
    if marks[syms[i]] == nil then missing[#missing + 1] = syms[i] end
  end
  if #missing > 0 then
    local got = redis.call('HMGET', KEYS[5], unpack(missing))
    for i = 1, #missing do marks[missing[i]] = got[i] or '' end
  end
  local px = {}
  for i = 1, #syms do px[i] = marks[syms[i]] end
  -- Sliding-window rate limit on the server's clock, shared by every worker.
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local now = now_ms
  local window = tonumber(ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - window)
  redis.call('ZADD', KEYS[6], now, ARGV[3])
  local n = redis.call('ZCARD', KEYS[6])
  redis.call('PEXPIRE', KEYS[6], window)
  -- Peak and day-start equity as the monitor last raised or reset them (8-byte slots).
  local shard, slot = acct[6], acct[7]
  local hwm, day, dayid = '', '', ''
  if shard and slot then
    local base = ARGV[4] .. shard
    local off = tonumber(slot) * 8
    hwm = redis.call('GETRANGE', base .. ':hwm', off, off + 7)
    day = redis.call('GETRANGE', base .. ':day', off, off + 7)
    dayid = dayids[base]
    if not dayid then
      dayid = redis.call('GET', base .. ':dayid') or ''
      dayids[base] = dayid
    end
  end
  return {0, st[1] or '', st[2] or '', cfg, acct, pos, syms, px, n, hwm, day, dayid}
end
