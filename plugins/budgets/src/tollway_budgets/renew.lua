-- tollway-budgets: renew the leases of a replica's reservations on one counter (its heartbeat).
--
-- KEYS[1]: the counter's reservation zset (see admit.lua).
-- ARGV: '' (the server's TIME, as in admit.lua), lease ms, then the request ids.
-- Only reservations still there are renewed (ZADD XX): one reclaimed meanwhile stays gone.
-- Reply: how many were renewed.

local now = now_ms(ARGV[1])  -- tollway.redis.LUA_NOW_MS, prepended
local lease = tonumber(ARGV[2])
local renewed = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
    renewed = renewed + 1
  end
end
return renewed
