-- tollway-budgets: create (mode 'i') or re-seed (mode 'r') counters from the ledger's sums
-- (the twin of _store.LocalStore.seed).
--
-- KEYS, per counter i: the hash (see admit.lua).
-- ARGV: n, then per counter: spent, expire_at_ms, provisional_until_ms (0: final), mode;
-- then when the seed's ledger sums were read (epoch ms; recorded as 'born', see heal.lua).
-- 'i' creates a missing counter (another replica may have been first: then nothing changes);
-- 'r' replaces the spend of a counter that is still provisional, keeping its reservations.

local n = tonumber(ARGV[1])
local born = ARGV[2 + n * 4]
for i = 1, n do
  local c = KEYS[i]
  local a = 2 + (i - 1) * 4
  local spent, expire_at, prov, mode = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  if mode == 'i' then
    if redis.call('EXISTS', c) == 0 then
      redis.call('HSET', c, 'spent', spent, 'reserved', 0)
      if born then redis.call('HSET', c, 'born', born) end
      if prov ~= '0' then redis.call('HSET', c, 'p', prov) end
      redis.call('PEXPIREAT', c, expire_at)
    end
  elseif redis.call('HEXISTS', c, 'p') == 1 then
    redis.call('HSET', c, 'spent', spent)
    if prov ~= '0' then
      redis.call('HSET', c, 'p', prov)
    else
      redis.call('HDEL', c, 'p')
    end
  end
end
return 1
