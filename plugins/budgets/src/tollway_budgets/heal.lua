-- tollway-budgets: add spend a replica admitted fail-open (Redis unreachable) to a counter
-- that kept its data through the outage (see _heal.py).
--
-- KEYS[1]: the counter's hash (see admit.lua).
-- ARGV: replay marker (<replica>:<batch>), margin_ms, then pairs: until_ms, amount
--   (micro-USD) — the spend journaled in one second, and that second's end (epoch ms).
-- Idempotent: the marker is recorded in the hash (field j:<marker>), so a replay that timed
-- out on the replica's side but ran here, then retried, counts once. A counter that does not
-- exist (Redis lost it) is left alone: it is seeded from the ledger. A counter created (seeded
-- from the ledger) at 'born' already holds what reached the ledger before then: a second
-- that ended more than margin_ms before 'born' is skipped.
-- Reply: the amount added.

local c = KEYS[1]
if redis.call('EXISTS', c) == 0 then return 0 end
if redis.call('HSETNX', c, 'j:' .. ARGV[1], 1) == 0 then return 0 end
local born = tonumber(redis.call('HGET', c, 'born') or '0')
local margin = tonumber(ARGV[2])
local added = 0
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i]) + margin >= born then added = added + tonumber(ARGV[i + 1]) end
end
if added ~= 0 then redis.call('HINCRBY', c, 'spent', added) end
return added
