-- Store mark prices newer than the ones held; hold back a jump until confirmed.
-- KEYS: 1 prices hash, 2 held-back prices hash, 3 feed status hash
-- ARGV: 1 feed timestamp (s), 2 jump fraction (0: off), then symbol, price pairs.
-- A price is kept as "price|ts". A tick older than the stored one is ignored (feeds
-- deliver out of order); a tick further than the jump fraction from the last good
-- price is held until a second tick within the fraction of it confirms the move.
-- Returns {accepted, out_of_order, held, confirmed}.
local ts = tonumber(ARGV[1])
local jump = tonumber(ARGV[2])
local accepted, old, held, confirmed = 0, 0, 0, 0
for i = 3, #ARGV, 2 do
  local sym, price = ARGV[i], ARGV[i + 1]
  local p = tonumber(price)
  local cur = redis.call('HGET', KEYS[1], sym)
  local take = true
  if cur then
    local sep = string.find(cur, '|', 1, true)
    local cur_p = tonumber(string.sub(cur, 1, sep - 1))
    local cur_ts = tonumber(string.sub(cur, sep + 1))
    if ts <= cur_ts then
      take = false
      old = old + 1
    elseif jump > 0 and math.abs(p - cur_p) > jump * cur_p then
      local pending = redis.call('HGET', KEYS[2], sym)
      take = false
      if pending then
        local psep = string.find(pending, '|', 1, true)
        local pend_p = tonumber(string.sub(pending, 1, psep - 1))
        local pend_ts = tonumber(string.sub(pending, psep + 1))
        if ts > pend_ts and math.abs(p - pend_p) <= jump * pend_p then
          take = true
          confirmed = confirmed + 1
        end
      end
      if not take then
        redis.call('HSET', KEYS[2], sym, price .. '|' .. ARGV[1])
        held = held + 1
      end
    end
  end
  if take then
    redis.call('HSET', KEYS[1], sym, price .. '|' .. ARGV[1])
    redis.call('HDEL', KEYS[2], sym)
    accepted = accepted + 1
  end
end
local t = redis.call('TIME')
local last = tonumber(redis.call('HGET', KEYS[3], 'last_ts') or '0')
if ts > last then redis.call('HSET', KEYS[3], 'last_ts', ARGV[1]) end
redis.call('HSET', KEYS[3], 'received_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return {accepted, old, held, confirmed}
