-- tollway-budgets: settle a request on its counters (the twin of _store.LocalStore.settle).
--
-- KEYS, per counter i: the hash and the reservation zset (see admit.lua).
-- ARGV: request id, n, then per counter: the actual cost (micro-USD).
-- The reservation is released and the cost added. A reservation already reclaimed (its lease
-- lapsed, so its amount was added to spent: see admit.lua) is corrected to the cost instead.
-- A request with neither was settled already (a settlement that timed out on the caller's
-- side may still have run, and is then retried): nothing changes, so a retry is harmless.
-- A counter that no longer exists (Redis lost it) is left alone: it is seeded again from the
-- ledger.

local rid = ARGV[1]
local n = tonumber(ARGV[2])
for i = 1, n do
  local c, z = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', c) == 1 then
    local cost = tonumber(ARGV[2 + i])
    local amt = redis.call('HGET', c, 'r:' .. rid)
    if amt then
      redis.call('HINCRBY', c, 'reserved', -tonumber(amt))
      redis.call('HDEL', c, 'r:' .. rid, 'm:' .. rid)
      redis.call('ZREM', z, rid)
    else
      local taken = redis.call('HGET', c, 'x:' .. rid)
      if taken then
        cost = cost - tonumber(taken)
        redis.call('HDEL', c, 'x:' .. rid)
      else
        cost = 0
      end
    end
    if cost ~= 0 then redis.call('HINCRBY', c, 'spent', cost) end
  end
end
return 1
