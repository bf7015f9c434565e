"""The gateway's auth cache: L1 LRU, optional Redis L2, the control plane behind them.

Hot path: a fresh L1 hit costs one HMAC of the secret, a dict lookup and an LRU touch. Only a
miss or a stale entry talks to anything else, and concurrent requests for one key share one
fetch.

Lifecycle of an entry::

    fetched ──(soft_expires_at)──▶ stale ──refresh ok──▶ fresh again
                                     │
                                     ├─ key rejected (401/403/404) ─▶ evicted, client gets 401
                                     └─ control plane unreachable ─▶ served stale, soft bumped
                                            … until hard_expires_at (last success + hard grace)
                                            ─▶ evicted (hard_cap_exceeded), client gets 503

``soft_expires_at`` = fetch time + soft TTL, never past the JWT's ``exp``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from tollway import Principal, ServiceUnavailable
from tollway.keys import KeyHasher, display_prefix
from tollway_vk_auth._bundle import (
    bundle_expires_at,
    principal_from_bundle,
    rejection_error,
    status_code,
)
from tollway_vk_auth._client import (
    ControlPlaneClient,
    ControlPlaneUnavailable,
    KeyRejected,
    Resolved,
)
from tollway_vk_auth._l2 import L2
from tollway_vk_auth._lru import LRU
from tollway_vk_auth._metrics import hit_counter
from tollway_vk_auth._settings import VKAuthSettings

__all__ = ["AuthCache", "Entry", "iso"]

log = logging.getLogger("tollway.vk_auth")

_HIT_L1 = hit_counter("l1")
_HIT_L2 = hit_counter("l2")
_MISS = hit_counter("miss")
_TIERS = {"l1": _HIT_L1, "l2": _HIT_L2, "miss": _MISS}
#: Times a fetch is retried when the change feed evicted its key while it ran.
_FETCH_ATTEMPTS = 3
#: Past this many remembered evictions, forget them and treat the next fetches as racing.
_EVICTION_MEMORY = 10_000


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.define(slots=True, eq=False)
class Entry:
    """One cached key (one secret: a rotated key has two entries until the old one expires)."""

    key_hash: str
    principal: Principal
    bundle: dict[str, Any] = attrs.field(repr=False)
    etag: str | None
    jwt: str = attrs.field(repr=False)
    jwt_expires_at: float
    fetched_at: float
    last_success: float
    soft_expires_at: float
    hard_expires_at: float
    #: The key's own ``expires_at`` (None: never).
    key_expires_at: float | None
    provider_ids: frozenset[str]
    #: Served past a failed refresh; the feed's recovery makes such entries refresh at once.
    stale_served: bool = False
    #: Where the entry came from: ``l1`` once in memory, ``l2`` when read from Redis.
    origin: str = "l1"

    @property
    def vk_id(self) -> str:
        return self.principal.key_id

    def to_l2(self) -> dict[str, Any]:
        return {
            "v": 1,
            "vk_id": self.vk_id,
            "bundle": self.bundle,
            "etag": self.etag,
            "jwt": self.jwt,
            "jwt_expires_at": self.jwt_expires_at,
            "fetched_at": self.fetched_at,
            "last_success": self.last_success,
        }


class AuthCache:
    """Authenticates secrets through L1 → L2 → control plane (see the module docstring)."""

    def __init__(
        self,
        settings: VKAuthSettings,
        pepper: bytes,
        client: ControlPlaneClient,
        l2: L2 | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.pepper = pepper
        #: ``hash_key(pepper, ·)`` with the pepper's HMAC keyed once (no secret is kept).
        self._hash_key = KeyHasher(pepper)
        self.client = client
        self.l2 = l2
        self.clock = clock
        self.l1: LRU[str, Entry] = LRU(settings.l1_size)
        #: hash → (until, rejection): recent refusals, so a client retrying a revoked key does
        #: not reach the control plane on every request. Flushed by every key change event.
        self.negative: LRU[str, tuple[float, KeyRejected]] = LRU(settings.l1_size)
        self._inflight: dict[str, asyncio.Future[tuple[Entry, str]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # Eviction sequence numbers: a fetch that overlapped an eviction of its key retries,
        # so it never stores what the control plane said before the change.
        self._seq = 0
        self._vk_evicted: dict[str, int] = {}
        self._provider_evicted: dict[str, int] = {}
        self._all_evicted = 0
        #: Why the control plane was last unreachable (None: it answered last time).
        self.unreachable: str | None = None
        self.unreachable_since: float | None = None

    # --- per request ----------------------------------------------------------------------

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal for ``secret``; None when the control plane does not know it.

        Raises :class:`InvalidAPIKey` (revoked, disabled, expired) or
        :class:`ServiceUnavailable` (``control_plane_unavailable``: a key this gateway has not
        cached while the control plane is unreachable).
        """
        key_hash = self._hash_key(secret)
        entry = self.l1.get(key_hash)
        if entry is not None:
            now = self.clock()
            if now < entry.soft_expires_at:
                if entry.key_expires_at is not None and now >= entry.key_expires_at:
                    self._expired(entry)
                _HIT_L1.inc()
                return entry.principal
        else:
            rejected = self.negative.peek(key_hash)
            if rejected is not None:
                if self.clock() < rejected[0]:
                    self._reject(rejected[1], display_prefix(secret))
                    return None
                self.negative.pop(key_hash)
        loaded = await self._load(key_hash, secret, entry)
        if loaded is None:
            return None
        entry, tier = loaded
        _TIERS[tier].inc()
        if entry.key_expires_at is not None and self.clock() >= entry.key_expires_at:
            self._expired(entry)
        return entry.principal

    def _expired(self, entry: Entry) -> None:
        self.l1.pop(entry.key_hash)
        self._spawn_l2_delete([entry.key_hash])
        error = rejection_error("expired", "", entry.principal.display_prefix)
        assert error is not None
        raise error

    def _reject(self, exc: KeyRejected, prefix: str) -> None:
        """Raise the client's 401 for a remembered refusal (nothing for ``unknown_key``)."""
        error = rejection_error(exc.code, exc.message, prefix)
        if error is not None:
            raise error

    async def _load(
        self, key_hash: str, secret: str, old: Entry | None
    ) -> tuple[Entry, str] | None:
        """Miss or stale: one fetch per key at a time, shared by every waiting request.
        None: the control plane does not know the key."""
        future = self._inflight.get(key_hash)
        if future is None:
            future = asyncio.ensure_future(self._fetch_or_stale(key_hash, secret, old))
            self._inflight[key_hash] = future
            future.add_done_callback(lambda f: self._fetch_done(key_hash, f))
        try:
            return await asyncio.shield(future)
        except KeyRejected as exc:
            error = rejection_error(exc.code, exc.message, display_prefix(secret))
            if error is None:
                return None
            raise error from None

    def _fetch_done(self, key_hash: str, future: asyncio.Future[Any]) -> None:
        if self._inflight.get(key_hash) is future:
            del self._inflight[key_hash]
        if not future.cancelled():
            future.exception()  # retrieved: no "never retrieved" warning if every waiter left

    async def _fetch_or_stale(
        self, key_hash: str, secret: str, old: Entry | None
    ) -> tuple[Entry, str]:
        # The tier that answers if the control plane cannot: the stale entry's.
        tier = "l1" if old is not None else "miss"
        if old is None and self.l2 is not None:
            warm = await self._from_l2(key_hash)
            if warm is not None:
                if self.clock() < warm.soft_expires_at:
                    self.l1.put(key_hash, warm)
                    return warm, "l2"
                old, tier = warm, "l2"
        start = self._seq
        try:
            entry = await self._fetch(key_hash, secret, old)
        except KeyRejected as exc:
            self.note_reachable()
            self.l1.pop(key_hash)
            self._spawn_l2_delete([key_hash])
            if self.settings.negative_ttl > 0:
                self.negative.put(key_hash, (self.clock() + self.settings.negative_ttl, exc))
            if old is not None:
                log.error(
                    "auth_cache_hard_evict vk_id=%s reason=auth_rejection code=%s",
                    old.vk_id,
                    exc.code,
                    extra={"vk_id": old.vk_id, "reason": "auth_rejection", "code": exc.code},
                )
            raise
        except ControlPlaneUnavailable as exc:
            self.note_unreachable(exc.reason)
            if old is None:
                raise self._unavailable(exc, secret) from None
            return self._serve_stale(old, exc, start, tier, secret), tier
        self.note_reachable()
        if old is not None:
            log.debug(
                "auth_cache_refresh_success vk_id=%s revision=%s",
                entry.vk_id,
                entry.principal.revision,
                extra={"vk_id": entry.vk_id, "revision": entry.principal.revision},
            )
        return entry, "miss"

    def _serve_stale(
        self, old: Entry, exc: ControlPlaneUnavailable, start: int, tier: str, secret: str
    ) -> Entry:
        now = self.clock()
        vk_id = old.vk_id
        if self._evicted_since(start, old):
            # The change feed evicted the key while we tried: do not resurrect it.
            raise self._unavailable(exc, secret)
        if not self.settings.stale_serving or now >= old.hard_expires_at:
            self.l1.pop(old.key_hash)
            self._spawn_l2_delete([old.key_hash])
            log.error(
                "auth_cache_hard_evict vk_id=%s reason=hard_cap_exceeded error=%s last_success=%s",
                vk_id,
                exc.reason,
                iso(old.last_success),
                extra={
                    "vk_id": vk_id,
                    "reason": "hard_cap_exceeded",
                    "error": exc.reason,
                    "last_success": iso(old.last_success),
                },
            )
            raise self._unavailable(exc, secret)
        new_soft = min(now + self.settings.soft_bump, old.hard_expires_at)
        old.soft_expires_at = new_soft
        old.stale_served = True
        self.l1.put(old.key_hash, old)
        log.warning(
            "auth_cache_refresh_transport_failure vk_id=%s error=%s error_class=%s "
            "new_soft_expires_at=%s",
            vk_id,
            exc.reason,
            exc.error_class,
            iso(new_soft),
            extra={
                "vk_id": vk_id,
                "error": exc.reason,
                "error_class": exc.error_class,
                "new_soft_expires_at": iso(new_soft),
                "hard_expires_at": iso(old.hard_expires_at),
            },
        )
        log.info(
            "auth_cache_serve_stale vk_id=%s tier=%s hard_expires_at=%s",
            vk_id,
            tier,
            iso(old.hard_expires_at),
            extra={"vk_id": vk_id, "tier": tier, "hard_expires_at": iso(old.hard_expires_at)},
        )
        return old

    def _unavailable(self, exc: ControlPlaneUnavailable, secret: str) -> ServiceUnavailable:
        if exc.error_class == "signature":
            hint = (
                "the gateway and the control plane do not share LW_GATEWAY_INTERNAL_SECRET; "
                "the operator must set the same value on both"
            )
        else:
            hint = (
                "retry shortly; if this persists, the operator should check that the control "
                f"plane at {self.client.base_url} is running (LW_GATEWAY_BASE_URL)"
            )
        return ServiceUnavailable(
            f"the gateway cannot verify the virtual key {display_prefix(secret)}… right now: "
            f"the control plane is unavailable ({exc.reason}); {hint}",
            code="control_plane_unavailable",
            retry_after=5,
        )

    async def _fetch(self, key_hash: str, secret: str, old: Entry | None) -> Entry:
        """resolve-key, then config (``If-None-Match`` when the old entry is the same key)."""
        entry: Entry | None = None
        for _ in range(_FETCH_ATTEMPTS):
            start = self._seq
            resolved = await self.client.resolve_key(secret)
            etag = old.etag if old is not None and old.vk_id == resolved.vk_id else None
            result = await self.client.fetch_config(resolved.vk_id, resolved.jwt, etag)
            if result.not_modified and old is not None:
                bundle, etag = old.bundle, result.etag or etag
            elif result.bundle is not None:
                bundle, etag = result.bundle, result.etag
            else:
                # 304 to a request without If-None-Match: ask again without it.
                result = await self.client.fetch_config(resolved.vk_id, resolved.jwt, None)
                if result.bundle is None:
                    raise ControlPlaneUnavailable(
                        f"config/{resolved.vk_id} answered 304 to an unconditional request",
                        "protocol",
                    )
                bundle, etag = result.bundle, result.etag
            now = self.clock()
            code = status_code(bundle, now)
            if code is not None:
                raise KeyRejected(403, code, "")
            entry = self._build(key_hash, bundle, etag, resolved, now)
            if not self._evicted_since(start, entry):
                break
            old = None  # the change feed evicted this key meanwhile: fetch it all again
        assert entry is not None
        self.l1.put(key_hash, entry)
        self._spawn_l2_put(entry)
        return entry

    def _build(
        self,
        key_hash: str,
        bundle: dict[str, Any],
        etag: str | None,
        resolved: Resolved,
        now: float,
    ) -> Entry:
        return self._entry(
            key_hash,
            bundle,
            etag,
            jwt=resolved.jwt,
            jwt_expires_at=resolved.expires_at,
            fetched_at=now,
            last_success=now,
        )

    def _entry(
        self,
        key_hash: str,
        bundle: dict[str, Any],
        etag: str | None,
        *,
        jwt: str,
        jwt_expires_at: float,
        fetched_at: float,
        last_success: float,
        origin: str = "l1",
    ) -> Entry:
        principal = principal_from_bundle(bundle)
        soft = min(fetched_at + self.settings.soft_ttl, jwt_expires_at)
        return Entry(
            key_hash=key_hash,
            principal=principal,
            bundle=bundle,
            etag=etag,
            jwt=jwt,
            jwt_expires_at=jwt_expires_at,
            fetched_at=fetched_at,
            last_success=last_success,
            soft_expires_at=soft,
            hard_expires_at=last_success + max(0.0, self.settings.hard_grace),
            key_expires_at=bundle_expires_at(bundle),
            provider_ids=frozenset(
                str(p.get("id") or p.get("name")) for p in bundle.get("providers") or ()
            ),
            origin=origin,
        )

    async def _from_l2(self, key_hash: str) -> Entry | None:
        assert self.l2 is not None
        doc, stale_before = await self.l2.get(key_hash)
        if doc is None:
            return None
        try:
            entry = self._entry(
                key_hash,
                doc["bundle"],
                doc.get("etag"),
                jwt=str(doc.get("jwt") or ""),
                jwt_expires_at=float(doc.get("jwt_expires_at") or 0.0),
                fetched_at=float(doc["fetched_at"]),
                last_success=float(doc.get("last_success") or doc["fetched_at"]),
                origin="l2",
            )
        except (KeyError, TypeError, ValueError):
            return None
        if entry.fetched_at < stale_before:
            entry.soft_expires_at = 0.0  # changed since it was written: revalidate first
        now = self.clock()
        if now >= entry.soft_expires_at and (
            not self.settings.stale_serving or now >= entry.hard_expires_at
        ):
            return None  # too old to serve, even stale
        return entry

    # --- the bootstrap (GATEWAY_CACHE_BOOTSTRAP_ALL_KEYS) -----------------------------------

    async def bootstrap(self) -> int:
        """Warm L1 (and L2) with every active key's bundle, page by page, up to
        ``bootstrap_max_keys``; the caller bounds the time. Returns the keys warmed."""
        settings = self.settings
        warmed = 0
        cursor = ""
        now = self.clock()
        start = self._seq
        while warmed < settings.bootstrap_max_keys:
            limit = min(500, settings.bootstrap_max_keys - warmed)
            docs, next_cursor = await self.client.active_keys(cursor, limit)
            now = self.clock()
            for doc in docs:
                if warmed >= settings.bootstrap_max_keys:
                    break
                warmed += self._warm(doc, now, start)
            if next_cursor is None:
                break
            cursor = next_cursor
        self.note_reachable()
        return warmed

    def _warm(self, doc: dict[str, Any], now: float, start: int) -> int:
        """One key of a bootstrap page into L1 (each of its working secrets); 1 if warmed."""
        try:
            bundle = doc["bundle"]
            hashes = [str(h) for h in doc["secret_hashes"]]
            jwt_expires_at = float(doc["expires_at"])
            jwt = str(doc["jwt"])
            etag = doc.get("etag")
        except (KeyError, TypeError, ValueError):
            return 0
        if status_code(bundle, now) is not None:
            return 0
        stored = False
        for key_hash in hashes:
            if key_hash in self.l1:  # a request fetched it meanwhile: that one is newer
                continue
            entry = self._entry(
                key_hash,
                bundle,
                etag,
                jwt=jwt,
                jwt_expires_at=jwt_expires_at,
                fetched_at=now,
                last_success=now,
            )
            if self._evicted_since(start, entry):
                continue  # changed since the bootstrap began: fetch it on demand
            self.l1.put(key_hash, entry)
            self._spawn_l2_put(entry)
            stored = True
        return int(stored)

    # --- L2 writes (off the request path) -------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _spawn_l2_put(self, entry: Entry) -> None:
        if self.l2 is not None:
            self._spawn(self.l2.put(entry.key_hash, entry.vk_id, entry.provider_ids, entry.to_l2()))

    def _spawn_l2_delete(self, hashes: list[str]) -> None:
        if self.l2 is not None and hashes:
            self._spawn(self.l2.delete(hashes))

    async def drain(self) -> None:
        """Wait for pending L2 writes (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # --- reachability (readiness) ---------------------------------------------------------

    def note_unreachable(self, reason: str) -> None:
        if self.unreachable is None:
            self.unreachable_since = self.clock()
        self.unreachable = reason

    def note_reachable(self) -> None:
        self.unreachable = None
        self.unreachable_since = None

    # --- eviction (the change feed) -------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        if len(self._vk_evicted) + len(self._provider_evicted) > _EVICTION_MEMORY:
            self._vk_evicted.clear()
            self._provider_evicted.clear()
            self._all_evicted = self._seq
        return self._seq

    def _evicted_since(self, start: int, entry: Entry) -> bool:
        if self._all_evicted > start or self._vk_evicted.get(entry.vk_id, 0) > start:
            return True
        return any(self._provider_evicted.get(p, 0) > start for p in entry.provider_ids)

    def evict_vk(self, vk_id: str) -> list[str]:
        """Drop every entry of ``vk_id`` (each of its secrets); the dropped hashes."""
        self._vk_evicted[vk_id] = self._next_seq()
        self.negative.clear()
        return self.l1.remove_if(lambda e: e.vk_id == vk_id)

    def evict_provider(self, provider_id: str) -> list[str]:
        """Drop entries whose chain contains ``provider_id``; make every other entry revalidate
        on its next request (a new or re-scoped provider can join any key's chain)."""
        self._provider_evicted[provider_id] = self._all_evicted = self._next_seq()
        dropped = self.l1.remove_if(lambda e: provider_id in e.provider_ids)
        for entry in self.l1.values():
            entry.soft_expires_at = 0.0
        return dropped

    def revalidate_all(self) -> None:
        """Every entry refreshes on its next request (``If-None-Match``: a 304 keeps it), and
        fetches running now retry — but stays servable stale-while-error. For changes that may
        touch any key's bundle without revoking anything (a budget changed)."""
        self._all_evicted = self._next_seq()
        for entry in self.l1.values():
            entry.soft_expires_at = 0.0

    def evict_all(self) -> None:
        self._all_evicted = self._next_seq()
        self.negative.clear()
        self.l1.clear()

    def refresh_stale_served(self) -> int:
        """The control plane is back: entries served stale refresh on their next request."""
        n = 0
        for entry in self.l1.values():
            if entry.stale_served:
                entry.soft_expires_at = 0.0
                entry.stale_served = False
                n += 1
        return n
