"""Sharing :class:`tollway.routing.LiveStats` between gateway replicas through Redis.

With ``GATEWAY_REDIS_URL`` set, each replica publishes its own latency averages, in-flight
counts and 429 cool-downs once per :data:`PERIOD` (sooner after a new cool-down) into one hash,
field = this replica, and reads the others' in the same pipeline: one round trip per period,
none per request. A replica that stopped publishing is ignored after :data:`STALE` seconds.
Redis errors back off (:class:`tollway.redis.FailurePolicy`); routing then uses this replica's
own measurements, which is what it does without Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, cast

import orjson

if TYPE_CHECKING:
    from tollway.gateway import Gateway

__all__ = ["HASH_KEY", "PERIOD", "STALE", "start_sharing"]

log = logging.getLogger("tollway.routing")

#: The hash every replica writes its field into.
HASH_KEY = "tollway:routing:live"
#: Seconds between two publications.
PERIOD = 1.0
#: A peer's publication older than this is ignored (it stopped or lost Redis).
STALE = 5.0
_USER = "routing"


def start_sharing(gateway: Gateway) -> bool:
    """Start publishing and reading live stats when the gateway has a Redis; returns whether
    it did."""
    if not gateway.settings.redis_url:
        return False
    try:
        from tollway.redis import FailurePolicy, shared
    except ImportError:  # the redis extra is not installed: local stats only
        log.warning(
            "routing_stats_local_only: GATEWAY_REDIS_URL is set but the redis package is "
            'missing (pip install "tollway[redis]"); latency, load and 429 cool-downs stay '
            "per replica"
        )
        return False
    facility = shared(gateway, _USER, max_connections=1)
    if facility is None:
        return False
    policy = FailurePolicy(
        log,
        "routing_stats_redis_failed during=%(during)s error=%(error)s; routing uses this "
        "replica's own measurements, retry in %(retry)ss",
        recovered="routing_stats_redis_recovered",
        retry_interval=5.0,
        warn_every=60.0,
    )
    node = f"{socket.gethostname()}:{os.getpid()}:{id(gateway):x}"
    wake = asyncio.Event()
    gateway.live.on_cool_down = wake.set
    gateway.spawn_daemon(_loop(gateway, facility, policy, node, wake))
    return True


async def _loop(
    gateway: Gateway, facility: Any, policy: Any, node: str, wake: asyncio.Event
) -> None:
    live = gateway.live
    try:
        while True:
            try:
                await asyncio.wait_for(wake.wait(), PERIOD)
            except TimeoutError:
                pass
            wake.clear()
            if not policy.available():
                continue
            now = time.time()
            payload = orjson.dumps({"at": now, "stats": live.snapshot(now)})
            try:
                async with asyncio.timeout(facility.options.deadline):
                    pipe = cast(Any, facility.client).pipeline(transaction=False)
                    pipe.hset(HASH_KEY, node, payload)
                    pipe.hgetall(HASH_KEY)
                    _, everyone = await pipe.execute()
            except Exception as exc:
                policy.failed(exc, "publish")
                continue
            policy.ok()
            peers = []
            stale: list[Any] = []
            for field, raw in everyone.items():
                name = field.decode() if isinstance(field, bytes) else str(field)
                if name == node:
                    continue
                try:
                    data = orjson.loads(raw)
                    if now - float(data["at"]) > STALE:
                        stale.append(field)
                        continue
                    stats = data["stats"]
                    peers.append({k: (v[0], int(v[1]), float(v[2])) for k, v in stats.items()})
                except (ValueError, KeyError, TypeError, IndexError):
                    stale.append(field)
            live.merge_peers(peers)
            if stale:
                try:
                    async with asyncio.timeout(facility.options.deadline):
                        await cast(Any, facility.client).hdel(HASH_KEY, *stale)
                except Exception as exc:
                    policy.failed(exc, "prune")
    finally:
        # Cancelled at shutdown: peers drop this replica's field once it is STALE.
        live.on_cool_down = None
        await facility.release(_USER)
