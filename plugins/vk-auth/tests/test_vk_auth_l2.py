"""The Redis L2 tier: encryption, indexes, and a second replica warming from it (real Redis)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis
from vk_auth_support import INTERNAL, PEPPER, FakeControlPlane, until

from tollway.keys import hash_key
from tollway_vk_auth import AuthCache, ChangeFeed, ControlPlaneClient, VKAuthSettings
from tollway_vk_auth._l2 import L2, derive_key, open_sealed, seal

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")


def test_seal_round_trips_and_binds_the_key_name() -> None:
    aead = AESGCM(derive_key(INTERNAL))
    blob = seal(aead, "p:abc", b'{"api_key":"sk-secret"}')
    assert b"sk-secret" not in blob
    assert open_sealed(aead, "p:abc", blob) == b'{"api_key":"sk-secret"}'
    assert open_sealed(aead, "p:other", blob) is None  # moved to another key
    assert open_sealed(AESGCM(derive_key(b"another secret")), "p:abc", blob) is None
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    assert open_sealed(aead, "p:abc", tampered) is None
    assert open_sealed(aead, "p:abc", b"junk") is None


class Replica:
    def __init__(self, cache: AuthCache, client: ControlPlaneClient, l2: L2) -> None:
        self.cache, self.client, self.l2 = cache, client, l2

    async def close(self) -> None:
        await self.cache.drain()
        await self.client.close()
        await self.l2.redis.aclose()


@asynccontextmanager
async def cluster(n: int = 2) -> AsyncIterator[tuple[FakeControlPlane, list[Replica], str]]:
    prefix = f"test:vkauth:{uuid.uuid4().hex[:10]}:"
    cp = FakeControlPlane()
    await cp.start()
    settings = VKAuthSettings(soft_ttl=60, soft_bump=300, hard_grace=3600, redis_prefix=prefix)
    replicas = []
    for _ in range(n):
        client = ControlPlaneClient(cp.url, INTERNAL, "node")
        await client.start()
        l2 = L2(Redis.from_url(REDIS_URL), INTERNAL, prefix, settings.l2_ttl)
        replicas.append(Replica(AuthCache(settings, PEPPER, client, l2), client, l2))
    try:
        yield cp, replicas, prefix
    finally:
        for r in replicas:
            await r.close()
        await cp.stop()
        redis = Redis.from_url(REDIS_URL)
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


@needs_redis
def test_l2_entry_is_encrypted_and_indexed() -> None:
    async def body() -> None:
        async with cluster(1) as (cp, (a,), prefix):
            vk, secret = cp.add_key()
            await a.cache.authenticate(secret)
            await a.cache.drain()
            redis = Redis.from_url(REDIS_URL)
            try:
                h = hash_key(PEPPER, secret)
                raw = await redis.get(f"{prefix}{h}")
                assert raw is not None
                assert b"sk-upstream" not in raw and secret.encode() not in raw
                assert 0 < await redis.ttl(f"{prefix}{h}") <= 3600
                assert await redis.smembers(f"{prefix}vk:{vk}") == {h.encode()}
                assert await redis.smembers(f"{prefix}prov:mp_1") == {h.encode()}
                names = [k async for k in redis.scan_iter(match=f"{prefix}*")]
                assert all(secret.encode() not in k for k in names)
                await a.l2.evict_vk(vk)
                assert await redis.get(f"{prefix}{h}") is None
            finally:
                await redis.aclose()

    asyncio.run(body())


@needs_redis
def test_second_replica_warms_from_l2_while_control_plane_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tollway.vk_auth")

    async def body() -> None:
        async with cluster(2) as (cp, (a, b), _):
            vk, secret = cp.add_key()
            assert (await a.cache.authenticate(secret)).key_id == vk  # type: ignore[union-attr]
            await a.cache.drain()
            await cp.stop()
            before = len(cp.calls)
            p = await b.cache.authenticate(secret)
            assert p is not None and p.key_id == vk
            assert len(cp.calls) == before
            (entry,) = b.cache.l1.values()
            assert entry.origin == "l2"
            # stale in L2 as well: served stale, logged, tier l2
            b.cache.l1.clear()
            b.cache.clock = lambda: time.time() + 120
            assert await b.cache.authenticate(secret) is not None
            assert any(
                r.getMessage().startswith(f"auth_cache_serve_stale vk_id={vk} tier=l2")
                for r in caplog.records
            )

    asyncio.run(body())


@needs_redis
def test_feed_event_deletes_l2_entries_another_replica_wrote() -> None:
    async def body() -> None:
        async with cluster(2) as (cp, (a, b), prefix):
            vk, secret = cp.add_key()
            await a.cache.authenticate(secret)
            await a.cache.drain()
            feed = ChangeFeed(b.client, b.cache, b.l2, timeout_s=2)
            feed.start()
            try:
                await until(lambda: feed.connected, 2)
                cp.set_status(vk, "revoked")
                redis = Redis.from_url(REDIS_URL)
                name = f"{prefix}{hash_key(PEPPER, secret)}"
                for _ in range(150):
                    if not await redis.exists(name):
                        break
                    await asyncio.sleep(0.02)
                assert not await redis.exists(name)
                await redis.aclose()
            finally:
                await feed.stop()

    asyncio.run(body())


@needs_redis
def test_everything_changed_marks_l2_entries_for_revalidation() -> None:
    async def body() -> None:
        async with cluster(2) as (cp, (a, b), _):
            _, secret = cp.add_key()
            await a.cache.authenticate(secret)
            await a.cache.drain()
            await b.l2.mark_all_stale(time.time() + 1)
            calls = len(cp.calls)
            assert await b.cache.authenticate(secret) is not None
            assert len(cp.calls) == calls + 2  # revalidated: resolve + config (304)

    asyncio.run(body())


def test_redis_down_is_a_miss_not_an_error() -> None:
    async def body() -> None:
        cp = FakeControlPlane()
        await cp.start()
        client = ControlPlaneClient(cp.url, INTERNAL, "node")
        await client.start()
        l2 = L2(
            Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2),
            INTERNAL,
            "x:",
            60,
        )
        cache = AuthCache(VKAuthSettings(), PEPPER, client, l2)
        try:
            _, secret = cp.add_key()
            assert await cache.authenticate(secret) is not None
        finally:
            await cache.drain()
            await client.close()
            await l2.redis.aclose()
            await cp.stop()

    asyncio.run(body())
