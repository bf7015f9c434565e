-- tollway-rate-limits: one admission decision, atomically (the twin of _window.LocalStore.acquire).
--
-- KEYS, per spec in order: 'log' -> the sorted set of entries and the key holding their total
--                          weight; 'day' -> a hash {d = UTC day number, n = count, and with
--                          a replica id 'r:<replica>' = that replica's own count, which
--                          heal.lua puts back after Redis lost its data}.
-- ARGV: now_ms ('' = the server's TIME, so every gateway shares one clock), member id,
--       window_ms, number of specs, then per spec: kind ('l' | 'd'), limit, cost; then,
--       optionally, the replica's id: KEYS then ends with the scope's epoch hash, and a
--       replica without its field there (Redis lost its data, or this scope is new to it) is
--       asked to put back its journal first (heal.lua, _journal.py).
-- Every key of one call carries the same hash tag, so the script runs on one cluster slot.
--
-- Reply: admitted {1, now_ms, remaining_1, ..., remaining_n}
--        refused  {0, now_ms, index (1-based), retry_ms (-1: never), used}
--        heal first {2, now_ms}

local function weight(m)
  return tonumber(string.match(m, '|(%d+)$')) or 0
end

local now = now_ms(ARGV[1])  -- tollway.redis.LUA_NOW_MS, prepended
local member_id = ARGV[2]
local window = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local day = math.floor(now / 86400000)
local next_midnight = (day + 1) * 86400000
local cutoff = now - window
local node = ARGV[5 + 3 * n]
if node and node ~= '' then
  if redis.call('HEXISTS', KEYS[#KEYS], node) == 0 then return {2, now} end
  redis.call('PEXPIRE', KEYS[#KEYS], window)
end

local kinds, limits, costs, k1, k2, used = {}, {}, {}, {}, {}, {}
local ki, ai = 1, 5
local worst, worst_retry = 0, 0

for i = 1, n do
  local kind, limit, cost = ARGV[ai], tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2])
  ai = ai + 3
  kinds[i], limits[i], costs[i] = kind, limit, cost
  local u, retry = 0, nil
  if kind == 'l' then
    local z, t = KEYS[ki], KEYS[ki + 1]
    ki = ki + 2
    k1[i], k2[i] = z, t
    local expired = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
    if #expired > 0 then
      local freed = 0
      for _, m in ipairs(expired) do freed = freed + weight(m) end
      redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
      if redis.call('EXISTS', z) == 0 then
        redis.call('DEL', t)
      else
        redis.call('DECRBY', t, freed)
      end
    end
    local total = redis.call('GET', t)
    if total then
      u = tonumber(total)
    elseif redis.call('EXISTS', z) == 1 then
      -- The total went missing (evicted?): rebuild it from the log.
      for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do u = u + weight(m) end
      redis.call('SET', t, u, 'PX', window)
    end
    if u < 0 then u = 0 end
    if u + cost > limit then
      if cost > limit then
        retry = -1
      else
        local need, freed, idx, found = u + cost - limit, 0, 0, false
        retry = window
        while not found do
          local batch = redis.call('ZRANGE', z, idx, idx + 127, 'WITHSCORES')
          if #batch == 0 then break end
          for j = 1, #batch, 2 do
            freed = freed + weight(batch[j])
            if freed >= need then
              retry = tonumber(batch[j + 1]) + window - now
              found = true
              break
            end
          end
          idx = idx + 128
        end
      end
    end
  else
    local h = KEYS[ki]
    ki = ki + 1
    k1[i] = h
    local dn = redis.call('HMGET', h, 'd', 'n')
    if dn[1] and tonumber(dn[1]) == day then
      u = tonumber(dn[2]) or 0
    elseif dn[1] then
      redis.call('DEL', h)  -- an earlier day's counts, the replicas' fields included
    end
    if u + cost > limit then
      if cost > limit then retry = -1 else retry = next_midnight - now end
    end
  end
  used[i] = u
  if retry then
    if worst == 0 or (worst_retry ~= -1 and (retry == -1 or retry > worst_retry)) then
      worst, worst_retry = i, retry
    end
  end
end

if worst > 0 then
  return {0, now, worst, worst_retry, used[worst]}
end

local reply = {1, now}
for i = 1, n do
  if kinds[i] == 'l' then
    redis.call('ZADD', k1[i], now, member_id .. '|' .. costs[i])
    redis.call('INCRBY', k2[i], costs[i])
    redis.call('PEXPIRE', k1[i], window)
    redis.call('PEXPIRE', k2[i], window)
  else
    redis.call('HSET', k1[i], 'd', day, 'n', used[i] + costs[i])
    if node and node ~= '' then redis.call('HINCRBY', k1[i], 'r:' .. node, costs[i]) end
    redis.call('PEXPIRE', k1[i], next_midnight - now + 60000)
  end
  reply[#reply + 1] = limits[i] - used[i] - costs[i]
end
return reply
