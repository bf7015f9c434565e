"""The Redis backend: one ``EVALSHA`` per admission decision, cluster-safe key names."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tollway_rate_limits._settings import RateLimitSettings
from tollway_rate_limits._window import Decision, Spec

__all__ = ["ACQUIRE_LUA", "SETTLE_LUA", "RedisStore", "connect"]

ACQUIRE_LUA = files("tollway_rate_limits").joinpath("acquire.lua").read_text()
SETTLE_LUA = files("tollway_rate_limits").joinpath("settle.lua").read_text()


def connect(url: str, settings: RateLimitSettings) -> Redis | RedisCluster:
    """A pooled asyncio client with bounded timeouts and at most one immediate retry (a pooled
    connection that died, e.g. after a Redis restart, is replaced once; nothing sleeps)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout_seconds,
        "socket_connect_timeout": settings.redis_connect_timeout_seconds,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 0,
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, max_connections=settings.redis_max_connections, **options)


class RedisStore:
    """Runs ``acquire.lua`` / ``settle.lua``; same semantics as :class:`LocalStore`."""

    def __init__(self, client: Redis | RedisCluster, deadline_seconds: float) -> None:
        self.client = client
        self.deadline = deadline_seconds
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._settle = client.register_script(SETTLE_LUA)

    async def acquire(
        self, specs: Sequence[Spec], member_id: str, window_ms: int, now_ms: int | None = None
    ) -> Decision:
        keys: list[str] = []
        args: list[str | int] = ["" if now_ms is None else now_ms, member_id, window_ms, len(specs)]
        for spec in specs:
            keys.extend(spec.keys)
            args.extend(("l" if spec.kind == "log" else "d", spec.limit, spec.cost))
        async with asyncio.timeout(self.deadline):
            reply = await self._acquire(keys=keys, args=args)
        if int(reply[0]) == 1:
            return Decision(True, int(reply[1]), remaining=tuple(int(r) for r in reply[2:]))
        return Decision(
            False,
            int(reply[1]),
            index=int(reply[2]) - 1,
            retry_ms=int(reply[3]),
            used=int(reply[4]),
        )

    async def settle(
        self, keys: Sequence[str], old: str, new: str, delta: int, window_ms: int
    ) -> bool:
        async with asyncio.timeout(self.deadline):
            reply = await self._settle(keys=list(keys), args=[old, new, delta, window_ms])
        return bool(reply)

    async def ping(self) -> None:
        async with asyncio.timeout(self.deadline):
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
