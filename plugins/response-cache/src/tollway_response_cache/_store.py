"""Where entries live: an in-process LRU with TTLs, or Redis (shared by every replica).

Both answer :meth:`lookup` with one of:

* ``HIT`` — a fresh entry (not older than the reader's TTL);
* ``LEAD`` — no entry, and this caller now holds the fill lock: it calls the upstream and then
  :meth:`put` (or :meth:`release` when the answer cannot be cached);
* ``WAIT`` — no entry, another replica holds the lock: poll again shortly;
* ``ALONE`` — no entry and no coalescing (the last leader failed, or no lock was asked for):
  call the upstream without the lock.

Redis does it in one script (``GET`` + ``SET NX PX``); the entry key and its lock share a hash
tag, so the script works on a Redis Cluster too. A request's first lookup rides the request's
Redis batch (:func:`tollway.redis_batch.request_batch`): it travels in the same round trip as the
admission calls other plugins deferred. Storing an answer and releasing a lock are settlements
(:func:`tollway.redis_batch.settlements`): queued, sent with every request's settlements a few
milliseconds later, off the request path.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from tollway.redis import RedisClient, Script
from tollway.redis_batch import RequestBatch, SettleQueue, Then
from tollway_response_cache._entry import Entry, EntryFormatError, decode, encode

__all__ = ["ALONE", "HIT", "LEAD", "WAIT", "MemoryStore", "RedisStore"]

ALONE, HIT, LEAD, WAIT = "alone", "hit", "lead", "wait"

#: What a failed leader leaves in the lock for this long: later arrivals go upstream at once
#: instead of queueing behind one another.
FAILED_MARK = "!"
FAILED_MARK_MS = 2000

_LOOKUP = """
local v = redis.call('GET', KEYS[1])
if v then
  local created = tonumber(string.sub(v, 1, 13))
  if created and tonumber(ARGV[1]) - created <= tonumber(ARGV[2]) then
    return {1, v}
  end
end
if ARGV[3] == '' then return {0, ''} end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {2, ''} end
if redis.call('GET', KEYS[2]) == '!' then return {0, ''} end
return {3, ''}
"""
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
#: ARGV[2]: how long the "failed" mark stays, or 0 to just delete the lock (its holder never
#: called the upstream: the next arrival may lead at once).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '0' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], '!', 'PX', ARGV[2])
  end
end
return 1
"""
_STATES = {0: ALONE, 1: HIT, 2: LEAD, 3: WAIT}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _release_args(token: str, failed: bool) -> tuple[str, int]:
    return token, FAILED_MARK_MS if failed else 0


class MemoryStore:
    """An LRU of entries with per-entry expiry, bounded by count and by payload bytes.

    One process only: coalescing happens in the caller's in-process flights, so ``lookup`` never
    answers ``WAIT``.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[str, tuple[float, Entry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def lookup(
        self,
        key: str,
        max_age_ms: int,
        token: str,
        lock_ms: int,
        batch: RequestBatch | None = None,
    ) -> tuple[str, Entry | None]:
        item = self._data.get(key)
        if item is not None:
            expires, entry = item
            if time.monotonic() < expires and now_ms() - entry.created_ms <= max_age_ms:
                self._data.move_to_end(key)
                return HIT, entry
            if time.monotonic() >= expires:
                self._drop(key)
        return (LEAD if token else ALONE), None

    async def put(self, key: str, entry: Entry, ttl_ms: int, token: str) -> None:
        size = entry.size
        if size > self.max_bytes:
            return
        self._drop(key)
        self._data[key] = (time.monotonic() + ttl_ms / 1000, entry)
        self.bytes += size
        # Least recently used first (expired entries are dropped when next looked up).
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    async def release(self, key: str, token: str, failed: bool = True) -> None:
        return None

    def _drop(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self.bytes -= item[1].size

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self.bytes = 0


class RedisStore:
    """Entries in Redis with ``PX`` expiry, plus a short fill lock per key for coalescing."""

    def __init__(self, client: RedisClient, prefix: str, deadline_seconds: float) -> None:
        self.client = client
        self.prefix = prefix
        self.deadline = deadline_seconds
        self._lookup = Script(client, _LOOKUP)
        self._put = Script(client, _PUT)
        self._release = Script(client, _RELEASE)

    def _keys(self, key: str) -> list[str]:
        tag = "{" + key + "}"  # entry and lock in one hash slot
        return [f"{self.prefix}:e:{tag}", f"{self.prefix}:l:{tag}"]

    async def lookup(
        self,
        key: str,
        max_age_ms: int,
        token: str,
        lock_ms: int,
        batch: RequestBatch | None = None,
    ) -> tuple[str, Entry | None]:
        """One lookup; with ``batch``, in the round trip of everything the request deferred."""
        keys, args = self._keys(key), (now_ms(), max_age_ms, token, lock_ms)
        if batch is not None:
            reply = await batch.call(self._lookup, keys, args)
        else:
            async with asyncio.timeout(self.deadline):
                reply = await self._lookup(keys=keys, args=args)
        state = _STATES[int(reply[0])]
        if state == HIT:
            try:
                return HIT, decode(bytes(reply[1]))
            except EntryFormatError:
                return ALONE, None  # another version's or a corrupt entry: refill it
        return state, None

    async def put(self, key: str, entry: Entry, ttl_ms: int, token: str) -> None:
        data = encode(entry)
        async with asyncio.timeout(self.deadline):
            await self._put(keys=self._keys(key), args=[data, ttl_ms, token])

    async def release(self, key: str, token: str, failed: bool = True) -> None:
        if not token:
            return
        async with asyncio.timeout(self.deadline):
            await self._release(keys=self._keys(key)[1:], args=_release_args(token, failed))

    def queue_put(
        self, queue: SettleQueue, key: str, entry: Entry, ttl_ms: int, token: str, then: Then
    ) -> None:
        """:meth:`put` as a settlement."""
        queue.put(self._put, self._keys(key), (encode(entry), ttl_ms, token), then=then)

    def queue_release(
        self, queue: SettleQueue, key: str, token: str, failed: bool, then: Then
    ) -> None:
        """:meth:`release` as a settlement; ``failed``: leave the "failed" mark (the holder's
        upstream call failed), else just free the lock (it never called the upstream)."""
        queue.put(self._release, self._keys(key)[1:], _release_args(token, failed), then=then)

    async def ping(self) -> None:
        async with asyncio.timeout(self.deadline):
            await self.client.ping()

    async def close(self) -> None:
        return None  # the client is the gateway's (tollway.redis): not closed here
