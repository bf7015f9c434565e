"""The ``[plugin.response-cache]`` settings section (every field has a default)."""

from __future__ import annotations

import attrs

__all__ = ["NAME", "ResponseCacheSettings"]

#: The settings section: ``[plugin.response-cache]``.
NAME = "response-cache"


@attrs.frozen
class ResponseCacheSettings:
    """Operator settings. Which keys cache, and for how long, is per key (``response_cache``)."""

    #: Prefix of every Redis key this plugin writes.
    key_prefix: str = "tollway:rc"
    #: In-process store (no ``GATEWAY_REDIS_URL``): at most this many entries …
    max_entries: int = 10_000
    #: … and this many payload bytes in total (least recently used evicted first).
    max_memory_bytes: int = 256 * 1024 * 1024
    #: Answers larger than this are not cached (a stream past it stops being buffered).
    max_entry_bytes: int = 8 * 1024 * 1024
    #: Concurrent identical misses wait for the first one's answer instead of each calling
    #: the upstream (per process; across replicas too with Redis).
    coalesce: bool = True
    #: The longest a coalesced request waits for the first one before calling the upstream
    #: itself; also the lifetime of the Redis fill lock.
    coalesce_wait_seconds: float = 60.0
    redis_socket_timeout_seconds: float = 0.25
    redis_connect_timeout_seconds: float = 0.5
    #: After a Redis error, the cache is skipped (requests go upstream) for this long.
    redis_retry_interval_seconds: float = 2.0
    #: ``GATEWAY_REDIS_URL`` names a Redis Cluster (also on when the core says so).
    redis_cluster: bool = False

    def problems(self) -> list[str]:
        out = []
        for name in ("max_entries", "max_memory_bytes", "max_entry_bytes"):
            if getattr(self, name) <= 0:
                out.append(f"plugin.{NAME}.{name}: must be positive")
        if self.coalesce_wait_seconds <= 0:
            out.append(f"plugin.{NAME}.coalesce_wait_seconds: must be positive")
        return out
