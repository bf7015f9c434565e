"""Authenticate virtual keys against the Tollway control plane (SPEC §3), through an auth cache.

* ``authenticate`` (``trylast``: in-memory plugins such as static-keys answer first): L1 LRU →
  Redis L2 (``GATEWAY_REDIS_URL``) → ``resolve-key`` + ``config/{vk_id}`` on the control plane.
* A background task long-polls the control plane's change feed and evicts changed keys.
* Stale-while-error: a cached key keeps working while the control plane is unreachable, up to
  ``LW_GATEWAY_AUTH_CACHE_HARD_GRACE`` after its last successful refresh.
* ``/readyz`` checks ``control_plane`` and ``auth_cache_bootstrap``.

The control plane is ``LW_GATEWAY_BASE_URL``, or — the embedded default — this gateway's own
address, where the ``tollway-control-plane`` plugin serves the internal API. With neither (no
base URL and no embedded control plane), the plugin stays out of the way: every key is "not
mine". See docs/plugins/vk-auth.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from tollway import Credential, Principal, RequestContext, StashKey, hookimpl
from tollway.redis import RedisFacility, shared
from tollway.secrets import load_gateway_secrets
from tollway_vk_auth._cache import AuthCache, Entry
from tollway_vk_auth._client import ControlPlaneClient, ControlPlaneUnavailable
from tollway_vk_auth._feed import ChangeFeed
from tollway_vk_auth._l2 import L2
from tollway_vk_auth._lru import LRU
from tollway_vk_auth._settings import (
    SettingsError,
    VKAuthSettings,
    embedded_base_url,
    format_duration,
    parse_duration,
)

if TYPE_CHECKING:
    from quart import Quart

    from tollway.gateway import Gateway

__all__ = [
    "LRU",
    "AuthCache",
    "ChangeFeed",
    "ControlPlaneClient",
    "Entry",
    "SettingsError",
    "VKAuthSettings",
    "format_duration",
    "parse_duration",
]

log = logging.getLogger("tollway.vk_auth")

_INTERNAL_PREFIX = "/api/internal/gateway/"
#: How this plugin is named to the shared Redis (tollway.redis).
_REDIS_USER = "vk-auth"


@attrs.define(eq=False)
class VKAuthState:
    """Everything the plugin keeps per gateway (on ``gateway.stash``)."""

    settings: VKAuthSettings
    cache: AuthCache
    client: ControlPlaneClient
    feed: ChangeFeed
    l2: L2 | None
    embedded: bool
    #: The gateway's Redis, which ``l2`` uses (None: no L2).
    facility: RedisFacility | None = None
    #: The auth cache bootstrap (``GATEWAY_CACHE_BOOTSTRAP_ALL_KEYS``), while it runs.
    bootstrap: asyncio.Task[None] | None = None
    #: How it ended: "" (not run / running), "ok: …" or "degraded: …".
    bootstrap_outcome: str = ""


_STATE: StashKey[VKAuthState | None] = StashKey("vk-auth.state")
_APP: StashKey[Quart] = StashKey("vk-auth.app")


@hookimpl
def register_routes(app: Quart, gateway: Gateway) -> None:
    """Remember the app, to see at start-up whether an embedded control plane serves it."""
    gateway.stash[_APP] = app


def _embedded_control_plane(gateway: Gateway) -> bool:
    app = gateway.stash.get(_APP)
    if app is not None:
        return any(rule.rule.startswith(_INTERNAL_PREFIX) for rule in app.url_map.iter_rules())
    return any(info.name == "tollway-control-plane" for info in gateway.plugin_infos)


@hookimpl
async def gateway_started(gateway: Gateway) -> None:
    settings = VKAuthSettings.from_env()  # SettingsError names the variable; start-up stops
    embedded = settings.base_url is None
    if embedded and not _embedded_control_plane(gateway):
        log.info(
            "vk_auth_inactive reason=no_control_plane: LW_GATEWAY_BASE_URL is unset and no "
            "embedded control plane is installed (pip install tollway-control-plane); keys "
            "are left to the other authenticate plugins"
        )
        gateway.stash[_STATE] = None
        return
    base_url = settings.base_url or embedded_base_url(gateway.settings.server.addr)
    secrets = load_gateway_secrets(gateway.settings.data_dir)
    node_id = f"{socket.gethostname()}:{os.getpid()}"
    client = ControlPlaneClient(base_url, secrets.internal, node_id)
    await client.start()
    l2: L2 | None = None
    redis = shared(gateway, _REDIS_USER, cluster=settings.redis_cluster)
    if redis is not None:
        l2 = L2(
            redis.client,
            secrets.internal,
            settings.redis_prefix,
            settings.l2_ttl,
        )
    cache = AuthCache(settings, secrets.pepper, client, l2)
    feed = ChangeFeed(
        client,
        cache,
        l2,
        timeout_s=settings.feed_timeout,
        draining=lambda: bool(gateway.draining),
    )
    feed.start()
    state = VKAuthState(settings, cache, client, feed, l2, embedded, facility=redis)
    gateway.stash[_STATE] = state
    if settings.bootstrap_all_keys:
        # In the background: the listener must be up first in the embedded mode, where the
        # control plane is this very process. Readiness waits for it, bounded by its timeout.
        state.bootstrap = asyncio.ensure_future(_bootstrap(state))
    log.info(
        "vk_auth_started base_url=%s embedded=%s l2=%s soft_ttl=%s soft_bump=%s hard_grace=%s",
        base_url,
        embedded,
        "redis" if l2 is not None else "off",
        format_duration(settings.soft_ttl),
        format_duration(settings.soft_bump),
        format_duration(settings.hard_grace) if settings.stale_serving else "disabled",
        extra={"base_url": base_url, "embedded": embedded},
    )


async def _bootstrap(state: VKAuthState) -> None:
    settings = state.settings
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(settings.bootstrap_timeout):
            while True:
                try:
                    warmed = await state.cache.bootstrap()
                    break
                except ControlPlaneUnavailable as exc:
                    # The embedded control plane may not listen yet: retry within the bound.
                    log.debug("auth_cache_bootstrap_retry error=%s", exc.reason)
                    await asyncio.sleep(0.2)
    except TimeoutError:
        bound = format_duration(settings.bootstrap_timeout)
        state.bootstrap_outcome = (
            f"degraded: the bootstrap did not finish within {bound} "
            f"({len(state.cache.l1)} key(s) cached); the rest load on first use"
        )
        log.warning(
            "auth_cache_bootstrap_incomplete timeout=%s cached=%d",
            format_duration(settings.bootstrap_timeout),
            len(state.cache.l1),
        )
        return
    finally:
        state.bootstrap = None
    state.bootstrap_outcome = f"ok: {warmed} key(s) warmed"
    log.info(
        "auth_cache_bootstrap_done keys=%d elapsed_ms=%d max_keys=%d",
        warmed,
        (loop.time() - started) * 1000,
        settings.bootstrap_max_keys,
        extra={"keys": warmed},
    )


@hookimpl
async def gateway_stopping(gateway: Gateway) -> None:
    state = gateway.stash.get(_STATE)
    if state is None:
        return
    if state.bootstrap is not None:
        state.bootstrap.cancel()
    await state.feed.stop()
    await state.cache.drain()
    await state.client.close()
    if state.facility is not None:
        await state.facility.release(_REDIS_USER)


@hookimpl(trylast=True)
async def authenticate(ctx: RequestContext, credential: Credential) -> Principal | None:
    state: VKAuthState | None = ctx.gateway.stash.get(_STATE)
    if state is None:
        return None
    return await state.cache.authenticate(credential.secret)


async def _probe(state: VKAuthState) -> str | None:
    """Ask the control plane for its feed cursor; None when it answered."""
    try:
        await state.client.probe()
    except ControlPlaneUnavailable as exc:
        state.cache.note_unreachable(exc.reason)
        return exc.reason
    state.cache.note_reachable()
    return None


@hookimpl
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    state = gateway.stash.get(_STATE)
    if state is None:
        return None

    async def control_plane() -> str:
        cache = state.cache
        reason = cache.unreachable
        probed = False
        if reason is None:
            if state.feed.connected:
                return "ok"
            # The feed has not answered yet (start-up): ask now.
            reason, probed = await _probe(state), True
            if reason is None:
                return "ok"
        if len(cache.l1):
            return (
                f"degraded: control plane unreachable ({reason}); serving {len(cache.l1)} "
                "cached key(s) stale-while-error"
            )
        if state.l2 is not None and await state.l2.warm():
            return (
                f"degraded: control plane unreachable ({reason}); serving keys from the Redis "
                "L2 auth cache"
            )
        if not probed:  # the feed's last word may be old: ask now
            reason = await _probe(state)
            if reason is None:
                return "ok"
        return f"error: control plane unreachable and no key cached: {reason}"

    def auth_cache_bootstrap() -> str:
        why = state.feed.died()
        if why is not None:
            return (
                f"error: the change-feed task stopped ({why}); revocations no longer reach this "
                "gateway, restart it"
            )
        if state.bootstrap is not None:
            return (
                f"error: warming the auth cache with every active key ({len(state.cache.l1)} so "
                f"far, at most {format_duration(state.settings.bootstrap_timeout)})"
            )
        return state.bootstrap_outcome or "ok"

    return {"control_plane": control_plane, "auth_cache_bootstrap": auth_cache_bootstrap}
