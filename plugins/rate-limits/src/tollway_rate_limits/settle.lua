-- tollway-rate-limits: settle a tpm reservation with the actual usage (twin of
-- _window.LocalStore.settle).
--
-- KEYS: the log's sorted set, its total.
-- ARGV: the reserved member, the settled member ('' = release), the weight delta, window_ms.
-- The entry keeps its admission time; if it already left the window there is nothing to do.
-- Reply: 1 when settled, 0 when the entry was gone.

local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if ARGV[1] == ARGV[2] then return 1 end
-- Add before removing, so the set never empties and keeps its TTL.
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[1], score, ARGV[2]) end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
return 1
