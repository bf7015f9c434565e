-- tollway-budgets: one admission over every budget counter of a request, atomically
-- (the twin of _store.LocalStore.admit).
--
-- KEYS, per counter i: the hash {spent, reserved, p, r:<request id> = amount,
--   m:<request id> = what the request was (JSON, for the ledger), x:<request id> = amount
--   reclaimed ...} and the sorted set of reservations (request id scored by when its lease
--   ends, ms). Every key of one call carries the organization's hash tag {org:<id>}, so the
--   script runs on one cluster slot.
-- ARGV: now_ms ('' = the server's TIME, one clock for every replica), request id,
--   reservation lease ms, seed retry ms, n, the request's description (JSON), then per
--   counter: limit, block (1|0), amount, expire_at_ms.
--
-- A reservation whose lease ended (its replica stopped renewing it: it died) is reclaimed:
-- released, its amount added to spent (the request is billed at its reservation, an upper
-- bound) and marked x:<request id> (a late settlement corrects spent by the difference).
-- Only once the counter has been in use for a whole lease: hb is its last admission (ms), hs
-- when its current run of admissions (none more than a lease apart) began. After a pause
-- longer than a lease — a Redis outage, during which no replica could renew anything —
-- nothing is reclaimed for one lease, so that live replicas renew theirs first.
--
-- Reply: {2, now, reclaimed, i...}   counters i do not exist yet: seed them, then call again
--        {0, now, reclaimed, i, spent, reserved}   counter i is a block budget at or over
--          its limit
--        {1, now, reclaimed, spent_1, reserved_1, reseed_1, ...}   admitted; amounts
--          reserved; reseed=1 asks the caller to seed a provisional counter again.
-- reclaimed: {request id, amount, description, ...} of the reservations reclaimed here.

local now = now_ms(ARGV[1])  -- tollway.redis.LUA_NOW_MS, prepended
local rid = ARGV[2]
local ttl = tonumber(ARGV[3])
local retry = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local meta = ARGV[6]
local reclaimed = {}

local missing = {2, now, reclaimed}
for i = 1, n do
  if redis.call('EXISTS', KEYS[2 * i - 1]) == 0 then missing[#missing + 1] = i end
end
if #missing > 3 then return missing end

local spent, reserved = {}, {}
for i = 1, n do
  local c, z = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 7 + (i - 1) * 4
  local hb = tonumber(redis.call('HGET', c, 'hb') or '0')
  local hs = tonumber(redis.call('HGET', c, 'hs') or '0')
  if now - hb > ttl then
    hs = now
    redis.call('HSET', c, 'hs', now)
  end
  redis.call('HSET', c, 'hb', now)
  local expired = {}
  if now - hs >= ttl then expired = redis.call('ZRANGEBYSCORE', z, '-inf', now) end
  if #expired > 0 then
    for _, m in ipairs(expired) do
      local amt = redis.call('HGET', c, 'r:' .. m)
      if amt then
        redis.call('HINCRBY', c, 'reserved', -tonumber(amt))
        redis.call('HINCRBY', c, 'spent', tonumber(amt))
        redis.call('HSET', c, 'x:' .. m, amt)
        redis.call('HDEL', c, 'r:' .. m)
        reclaimed[#reclaimed + 1] = m
        reclaimed[#reclaimed + 1] = amt
        reclaimed[#reclaimed + 1] = redis.call('HGET', c, 'm:' .. m) or ''
      end
      redis.call('HDEL', c, 'm:' .. m)
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  end
  local s = tonumber(redis.call('HGET', c, 'spent') or '0')
  local r = tonumber(redis.call('HGET', c, 'reserved') or '0')
  if r < 0 then r = 0 end
  spent[i], reserved[i] = s, r
  if ARGV[a + 1] == '1' and s + r >= tonumber(ARGV[a]) then
    return {0, now, reclaimed, i, s, r}
  end
end

local out = {1, now, reclaimed}
for i = 1, n do
  local c, z = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 7 + (i - 1) * 4
  local amount = tonumber(ARGV[a + 2])
  local expire_at = tonumber(ARGV[a + 3])
  if amount > 0 then
    redis.call('HINCRBY', c, 'reserved', amount)
    redis.call('HSET', c, 'r:' .. rid, amount)
    if meta ~= '' then redis.call('HSET', c, 'm:' .. rid, meta) end
    redis.call('ZADD', z, now + ttl, rid)
    redis.call('PEXPIREAT', z, expire_at)
  end
  redis.call('PEXPIREAT', c, expire_at)
  local reseed = 0
  local p = redis.call('HGET', c, 'p')
  if p and tonumber(p) <= now then
    -- A provisional counter (the control plane could not seed it): one caller re-seeds it.
    redis.call('HSET', c, 'p', now + retry)
    reseed = 1
  end
  out[#out + 1] = spent[i]
  out[#out + 1] = reserved[i]
  out[#out + 1] = reseed
end
return out
