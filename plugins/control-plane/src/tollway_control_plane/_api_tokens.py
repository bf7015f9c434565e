"""Admin API tokens: permissions at a scope, for the admin API, the console and the CLI's remote
mode. The secret (``lw_at_…``) is shown once; the store keeps its HMAC-SHA256 under the pepper,
as it keeps a virtual key's (:func:`tollway.keys.hash_key`)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import attrs
from cachetools import TTLCache

from tollway.keys import hash_key, keys_equal
from tollway_control_plane._base import StoreBase
from tollway_control_plane._errors import NotFound
from tollway_control_plane._records import Scope, _records, _Row
from tollway_control_plane._util import dumps, format_time, loads, new_id, now, parse_time
from tollway_control_plane._values import KEY_SCOPES, _name
from tollway_control_plane.auth import TOKEN_PREFIX, parse_permissions

__all__ = ["RESOLVE_TTL_SECONDS", "ApiToken", "ApiTokensMixin"]

#: How long a resolved (or refused) token secret is remembered by one process: a revocation
#: or expiry takes effect everywhere within this time.
RESOLVE_TTL_SECONDS = 1.0
#: ``last_used_at`` is written at most this often per token (it is a hint, not an audit log).
_LAST_USED_EVERY = timedelta(minutes=1)
_DISPLAY = len(TOKEN_PREFIX) + 6


def _permissions(value: Any) -> list[str]:
    return list(loads(value) or [])


@attrs.frozen
class ApiToken(_Row):
    """An API token as the store keeps it (never its secret or hash)."""

    _READ = {"permissions": _permissions}

    id: str
    name: str
    display_prefix: str
    scope_type: str
    organization_id: str
    team_id: str | None
    project_id: str | None
    permissions: list[str]
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    created_by: str | None
    created_at: str

    @property
    def scope(self) -> Scope:
        return Scope(self.scope_type, self.organization_id, self.team_id, self.project_id)

    def status(self, at: datetime | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            try:
                expired = parse_time(self.expires_at) <= (at or now())
            except ValueError:
                return "expired"  # unreadable: fail closed
            if expired:
                return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["scope"] = self.scope.label
        data["status"] = self.status()
        return data


class ApiTokensMixin(StoreBase):
    _token_cache: TTLCache[str, ApiToken | None] | None = None
    _token_cache_lock = threading.Lock()

    def _tokens_cache(self) -> TTLCache[str, ApiToken | None]:
        with self._token_cache_lock:
            if self._token_cache is None:
                self._token_cache = TTLCache(maxsize=4096, ttl=RESOLVE_TTL_SECONDS)
            return self._token_cache

    def create_api_token(
        self,
        *,
        name: str,
        scope: str | Scope | None,
        permissions: str | Iterable[Any],
        expires_at: str | datetime | None = None,
        created_by: str | None = None,
    ) -> tuple[ApiToken, str]:
        """Create a token; return it and its secret (the only time the secret is available).
        ``scope``: ``organization``, ``team:ID`` or ``project:ID`` (an id, a name or a slug)."""
        name = _name(name, "API token")
        granted = parse_permissions(permissions)
        resolved = self.resolve_scope(scope, KEY_SCOPES)
        expiry = None
        if expires_at is not None:
            if isinstance(expires_at, datetime):
                expiry = format_time(expires_at, micros=False)
            else:
                from tollway_control_plane.validation import check_time

                expiry = format_time(check_time("expires_at", expires_at), micros=False)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = new_id("at")
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO api_tokens (id, name, display_prefix, secret_hash, scope_type, "
                "organization_id, team_id, project_id, permissions, expires_at, created_by, "
                "created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    token_id,
                    name,
                    secret[:_DISPLAY],
                    hash_key(self._pepper, secret),
                    resolved.type,
                    resolved.organization_id,
                    resolved.team_id,
                    resolved.project_id,
                    dumps(list(granted)),
                    expiry,
                    created_by,
                    format_time(now()),
                ),
            )
        return self.get_api_token(token_id), secret

    def get_api_token(self, token_id: str) -> ApiToken:
        rows = self.db.query("SELECT * FROM api_tokens WHERE id = ?", (token_id,))
        if not rows:
            raise NotFound(_no_token(token_id))
        return ApiToken.from_row(rows[0])

    def list_api_tokens(self) -> list[ApiToken]:
        rows = self.db.query("SELECT * FROM api_tokens ORDER BY created_at, id")
        return _records(rows, ApiToken.from_row)

    def revoke_api_token(self, token_id: str) -> ApiToken:
        """Revoke a token for good (revoking twice is a no-op). This process forgets it at
        once; other processes within :data:`RESOLVE_TTL_SECONDS`."""
        with self.db.transaction() as tx:
            rows = tx.query("SELECT revoked_at FROM api_tokens WHERE id = ?", (token_id,))
            if not rows:
                raise NotFound(_no_token(token_id))
            if rows[0]["revoked_at"] is None:
                tx.execute(
                    "UPDATE api_tokens SET revoked_at = ? WHERE id = ?",
                    (format_time(now()), token_id),
                )
        self._tokens_cache().clear()
        return self.get_api_token(token_id)

    def resolve_api_token(self, secret: str, at: datetime | None = None) -> ApiToken | None:
        """The active token ``secret`` belongs to, or ``None`` (unknown, revoked, expired).
        Remembered for :data:`RESOLVE_TTL_SECONDS`, so a burst of admin calls costs one query."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 256:
            return None
        at = at or now()
        digest = hash_key(self._pepper, secret)
        cache = self._tokens_cache()
        try:
            token = cache[digest]
        except KeyError:
            token = self._lookup_token(digest, at)
            cache[digest] = token
        if token is None or token.status(at) != "active":
            return None
        return token

    def active_api_token(self, token_id: str, at: datetime | None = None) -> ApiToken | None:
        """The token with id ``token_id`` while it is active, else ``None`` (unknown, revoked,
        expired): what a console session, which keeps the id and never the secret, checks on
        every page. Remembered for :data:`RESOLVE_TTL_SECONDS`, as :meth:`resolve_api_token`."""
        at = at or now()
        cache = self._tokens_cache()
        entry = f"id:{token_id}"  # a digest is hex: the two kinds of entry never collide
        token: ApiToken | None = None
        with self._token_cache_lock:
            try:
                token, cached = cache[entry], True
            except KeyError:
                cached = False
        if not cached:
            rows = self.db.query("SELECT * FROM api_tokens WHERE id = ?", (token_id,))
            token = ApiToken.from_row(rows[0]) if rows else None
            with self._token_cache_lock:
                cache[entry] = token
        if token is None or token.status(at) != "active":
            return None
        return token

    def _lookup_token(self, digest: str, at: datetime) -> ApiToken | None:
        rows = self.db.query("SELECT * FROM api_tokens WHERE secret_hash = ?", (digest,))
        if not rows or not keys_equal(rows[0]["secret_hash"], digest):
            return None
        token = ApiToken.from_row(rows[0])
        if token.status(at) == "active":
            last = token.last_used_at
            if last is None or parse_time(last) <= at - _LAST_USED_EVERY:
                with self.db.transaction() as tx:
                    tx.execute(
                        "UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                        (format_time(at), token.id),
                    )
        return token


def _no_token(token_id: str) -> str:
    return f"no API token {token_id!r}; `tollway api-tokens list` shows the tokens"
