-- tollway-rate-limits: put back what this replica admitted in the window, after Redis lost
-- it (came back empty) or never saw it (admitted fail-open while Redis was unreachable).
-- See _journal.py.
--
-- KEYS: the scope's epoch hash, then per log: its sorted set, its total, its placeholders
--   hash (replica -> the placeholder member it holds in the set); then per day counter: its
--   hash (see acquire.lua).
-- ARGV: now_ms ('' = the server's TIME), replica id, window_ms, lost (1: Redis lost its data,
--   placeholders are due; 0: only this replica's entries; 2: nothing unless Redis lost the
--   scope's data, i.e. the replica's field in the epoch hash is gone), number of logs, then
--   per log:
--   seen_ms, seen_used (when this replica last decided on the log, and the log's total
--   then, this decision included; 0 0: never), m, then m pairs (admission time ms, member);
--   then the number of day counters, and per counter: its UTC day number, this replica's own
--   count that day (fail-open admissions included), and the total it last saw that day.
--
-- Per log: (1) this replica's entries still in the window are added if their member is not
-- there (ZADD NX) — idempotent; (2) the entries added are taken off other replicas'
-- placeholders (a placeholder stands for entries its replica did not admit itself, which
-- these are); (3) (after a loss only) if the log now holds less than the replica last saw, a placeholder of the
-- difference, scored at seen_ms (so it leaves the window no later than what it stands for),
-- stands for the other replicas' entries until they put back their own.
-- Per day counter (today's only), the same by count: the replica's field 'r:<replica>' is
-- raised to its own count and the total by as much (idempotent: a repeat finds nothing
-- missing); what was added is taken off other replicas' placeholders ('~<replica>'); after a
-- loss, a placeholder of what the total lacks of what the replica last saw.
-- Finally the replica's field in the epoch hash records that it put back its journal.
-- Reply: the weight added.

local function weight(m)
  return tonumber(string.match(m, '|(%d+)$')) or 0
end

local now = now_ms(ARGV[1])  -- tollway.redis.LUA_NOW_MS, prepended
local node = ARGV[2]
local window = tonumber(ARGV[3])
-- A replica without its field in the epoch hash put nothing back since Redis lost its data.
local missing = redis.call('HEXISTS', KEYS[1], node) == 0
if ARGV[4] == '2' and not missing then
  return 0  -- Redis has what this replica admitted: the decision refreshes the field
end
local lost = ARGV[4] == '1' or missing
local logs = tonumber(ARGV[5])
local cutoff = now - window
local total_added = 0
local a = 6
for i = 1, logs do
  local z, t, h = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local seen_ms, seen_used, m = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  -- expired entries first (as acquire.lua does), so the total is the window's
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
  if #expired > 0 then
    local freed = 0
    for _, e in ipairs(expired) do freed = freed + weight(e) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
    redis.call('DECRBY', t, freed)
  end
  local added = 0
  for j = 1, m do
    local score, member = tonumber(ARGV[a]), ARGV[a + 1]
    a = a + 2
    if score > cutoff and redis.call('ZADD', z, 'NX', score, member) == 1 then
      redis.call('INCRBY', t, weight(member))
      added = added + weight(member)
    end
  end
  total_added = total_added + added
  local left = added
  if left > 0 then
    local holders = redis.call('HGETALL', h)
    for k = 1, #holders, 2 do
      if left <= 0 then break end
      local other, held = holders[k], holders[k + 1]
      if other ~= node then
        local score = redis.call('ZSCORE', z, held)
        if score then
          local w = weight(held)
          local take = math.min(w, left)
          left = left - take
          redis.call('ZREM', z, held)
          redis.call('DECRBY', t, take)
          if w - take > 0 then
            local name = '~' .. other .. '|' .. (w - take)
            redis.call('ZADD', z, score, name)
            redis.call('HSET', h, other, name)
          else
            redis.call('HDEL', h, other)
          end
        else
          redis.call('HDEL', h, other)
        end
      end
    end
  end
  local total = tonumber(redis.call('GET', t) or '0')
  if lost and seen_ms > cutoff and seen_used > total and redis.call('HEXISTS', h, node) == 0 then
    local name = '~' .. node .. '|' .. (seen_used - total)
    redis.call('ZADD', z, seen_ms, name)
    redis.call('INCRBY', t, seen_used - total)
    redis.call('HSET', h, node, name)
  end
  if redis.call('EXISTS', z) == 1 then
    redis.call('PEXPIRE', z, window)
    redis.call('PEXPIRE', t, window)
    redis.call('PEXPIRE', h, window)
  else
    redis.call('DEL', t, h)
  end
end
local today = math.floor(now / 86400000)
local day_ttl = (today + 1) * 86400000 - now + 60000
local kd = 3 * logs + 2
local days = tonumber(ARGV[a]) or 0
a = a + 1
for i = 1, days do
  local h = KEYS[kd]
  kd = kd + 1
  local day, own, seen = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  if day == today then
    local dn = redis.call('HMGET', h, 'd', 'n', 'r:' .. node)
    local n, have = 0, 0
    if dn[1] and tonumber(dn[1]) == today then
      n, have = tonumber(dn[2]) or 0, tonumber(dn[3]) or 0
    elseif dn[1] then
      redis.call('DEL', h)  -- an earlier day's counts
    end
    local added = 0
    if own > have then
      added = own - have
      n = n + added
      redis.call('HSET', h, 'r:' .. node, own)
    end
    total_added = total_added + added
    local left = added
    if left > 0 then
      local fields = redis.call('HGETALL', h)
      for k = 1, #fields, 2 do
        if left <= 0 then break end
        local f = fields[k]
        if string.sub(f, 1, 1) == '~' and f ~= '~' .. node then
          local held = tonumber(fields[k + 1]) or 0
          local take = math.min(held, left)
          left = left - take
          n = n - take
          if held > take then redis.call('HSET', h, f, held - take) else redis.call('HDEL', h, f) end
        end
      end
    end
    if lost and seen > n and redis.call('HEXISTS', h, '~' .. node) == 0 then
      redis.call('HSET', h, '~' .. node, seen - n)
      n = seen
    end
    if n > 0 then
      redis.call('HSET', h, 'd', today, 'n', n)
      redis.call('PEXPIRE', h, day_ttl)
    end
  end
end
redis.call('HSET', KEYS[1], node, 1)
redis.call('PEXPIRE', KEYS[1], window)
return total_added
