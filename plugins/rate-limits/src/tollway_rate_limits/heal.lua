-- tollway-rate-limits: put back what this replica admitted in the window, after Redis lost
-- it (came back empty) or never saw it (admitted fail-open while Redis was unreachable).
-- See _journal.py.
--
-- KEYS: the scope's epoch hash, then per log: its sorted set, its total, its placeholders
--   hash (replica -> the placeholder member it holds in the set).
-- ARGV: now_ms ('' = the server's TIME), replica id, window_ms, lost (1: Redis lost its data,
--   placeholders are due; 0: only this replica's entries), number of logs, then per log:
--   seen_ms, seen_used (when this replica last decided on the log, and the log's total
--   then, this decision included; 0 0: never), m, then m pairs (admission time ms, member).
--
-- Per log: (1) this replica's entries still in the window are added if their member is not
-- there (ZADD NX) — idempotent; (2) the entries added are taken off other replicas'
-- placeholders (a placeholder stands for entries its replica did not admit itself, which
-- these are); (3) (after a loss only) if the log now holds less than the replica last saw, a placeholder of the
-- difference, scored at seen_ms (so it leaves the window no later than what it stands for),
-- stands for the other replicas' entries until they put back their own.
-- Finally the replica's field in the epoch hash records that it put back its journal.
-- Reply: the weight added.

local function weight(m)
  return tonumber(string.match(m, '|(%d+)$')) or 0
end

local now = now_ms(ARGV[1])  -- tollway.redis.LUA_NOW_MS, prepended
local node = ARGV[2]
local window = tonumber(ARGV[3])
-- A replica without its field in the epoch hash put nothing back since Redis lost its data.
local lost = ARGV[4] == '1' or redis.call('HEXISTS', KEYS[1], node) == 0
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
redis.call('HSET', KEYS[1], node, 1)
redis.call('PEXPIRE', KEYS[1], window)
return total_added
