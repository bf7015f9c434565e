"""The auth cache's Redis tier (L2): shared by every replica, encrypted at rest.

A key's entry lives under ``<prefix><hash>`` where ``hash`` is ``hash_key(pepper, secret)`` (the
raw secret never reaches Redis). The value is AES-256-GCM ciphertext — bundles carry decrypted
provider credentials — under a key derived with HKDF-SHA256 from ``LW_GATEWAY_INTERNAL_SECRET``;
the Redis key name is the associated data, so a value cannot be replayed under another key.

Side keys, all with the entry TTL:

* ``<prefix>vk:<vk_id>`` and ``<prefix>prov:<provider_id>`` — sets of entry hashes, so a change
  feed event can delete a key's entries even on a replica that never cached them;
* ``<prefix>stale_before`` — a unix time; entries fetched before it must be revalidated before
  they are served fresh (set by "everything changed" events);
* ``<prefix>warm`` — present while any entry is, for ``/readyz``.

Every operation is best effort: a Redis error is logged (at most every 30 s, by the gateway's
failure policy, :class:`tollway.redis.FailurePolicy`) and the tier is skipped — the control plane
and L1 still answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tollway.redis import FailurePolicy

__all__ = ["L2", "derive_key", "open_sealed", "seal"]

log = logging.getLogger("tollway.vk_auth")

_VERSION = b"\x01"
_HKDF_INFO = b"tollway vk-auth L2 entry encryption v1"


def derive_key(internal_secret: bytes) -> bytes:
    """The 256-bit AES key for L2 entries, derived from ``LW_GATEWAY_INTERNAL_SECRET``."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        internal_secret
    )


def seal(aead: AESGCM, name: str, plaintext: bytes) -> bytes:
    """``version ‖ nonce ‖ AES-GCM(plaintext, aad=name)``."""
    nonce = os.urandom(12)
    return _VERSION + nonce + aead.encrypt(nonce, plaintext, name.encode())


def open_sealed(aead: AESGCM, name: str, blob: bytes) -> bytes | None:
    """The plaintext of :func:`seal`'s output, or None when it is not ours (other secret,
    tampered, moved to another key name, unknown version)."""
    if len(blob) < 1 + 12 + 16 or blob[:1] != _VERSION:
        return None
    try:
        return aead.decrypt(blob[1:13], blob[13:], name.encode())
    except InvalidTag:
        return None


class L2:
    """Encrypted auth-cache entries in Redis (``redis.asyncio`` client or cluster client)."""

    def __init__(self, redis: Any, internal_secret: bytes, prefix: str, ttl: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self._aead = AESGCM(derive_key(internal_secret))
        #: Log, at most every 30 s; never skip the tier (each call tries Redis).
        self.policy = FailurePolicy(
            log,
            "auth_cache_l2_error op=%(during)s error=%(error)s",
            retry_interval=0.0,
            warn_every=30.0,
            typed_errors=True,
            structured=True,
            during_field="op",
        )

    def entry_name(self, key_hash: str) -> str:
        return f"{self.prefix}{key_hash}"

    def _error(self, what: str, exc: BaseException) -> None:
        self.policy.failed(exc, what)

    async def get(self, key_hash: str) -> tuple[dict[str, Any] | None, float]:
        """The decrypted entry document (None when absent or unreadable), and ``stale_before``."""
        name = self.entry_name(key_hash)
        try:
            pipe = self.redis.pipeline(transaction=False)  # two slots under Redis Cluster
            pipe.get(name)
            pipe.get(f"{self.prefix}stale_before")
            blob, stale_before = await pipe.execute()
        except Exception as exc:
            self._error("get", exc)
            return None, 0.0
        try:
            marker = float(stale_before) if stale_before else 0.0
        except ValueError:
            marker = 0.0
        if not blob:
            return None, marker
        plain = open_sealed(self._aead, name, bytes(blob))
        if plain is None:
            return None, marker
        try:
            doc = orjson.loads(plain)
        except orjson.JSONDecodeError:
            return None, marker
        return (doc if isinstance(doc, dict) else None), marker

    async def put(
        self, key_hash: str, vk_id: str, provider_ids: Iterable[str], doc: dict[str, Any]
    ) -> None:
        """Store an entry and index it by key id and provider id."""
        name = self.entry_name(key_hash)
        blob = seal(self._aead, name, orjson.dumps(doc))
        ttl = self.ttl
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(name, blob, ex=ttl)
            for idx in (
                f"{self.prefix}vk:{vk_id}",
                *(f"{self.prefix}prov:{p}" for p in provider_ids),
            ):
                pipe.sadd(idx, key_hash)
                pipe.expire(idx, ttl)
            pipe.set(f"{self.prefix}warm", b"1", ex=ttl)
            await pipe.execute()
        except Exception as exc:
            self._error("put", exc)

    async def delete(self, key_hashes: Iterable[str]) -> None:
        names = [self.entry_name(h) for h in key_hashes]
        if not names:
            return
        try:
            await self.redis.delete(*names)
        except Exception as exc:
            self._error("delete", exc)

    async def _evict_index(self, index: str) -> None:
        try:
            members = await self.redis.smembers(index)
            names = [self.entry_name(m.decode() if isinstance(m, bytes) else m) for m in members]
            await self.redis.delete(*names, index)
        except Exception as exc:
            self._error("evict", exc)

    async def evict_vk(self, vk_id: str) -> None:
        """Delete every entry of one virtual key (all its secrets)."""
        await self._evict_index(f"{self.prefix}vk:{vk_id}")

    async def evict_provider(self, provider_id: str) -> None:
        """Delete every entry whose provider chain contains ``provider_id``."""
        await self._evict_index(f"{self.prefix}prov:{provider_id}")

    async def mark_all_stale(self, now: float) -> None:
        """Make every entry written before ``now`` revalidate before it is served fresh."""
        try:
            await self.redis.set(f"{self.prefix}stale_before", repr(now), ex=self.ttl)
        except Exception as exc:
            self._error("mark_stale", exc)

    async def warm(self) -> bool:
        """Whether any entry may be present (for readiness while the control plane is down)."""
        try:
            return bool(await self.redis.exists(f"{self.prefix}warm"))
        except Exception as exc:
            self._error("warm", exc)
            return False
