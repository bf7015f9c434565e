"""Virtual keys: create, change, rotate, revoke; resolve a presented secret; the pages a
gateway warms its auth cache with."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from tollway.keys import check_key_format, display_prefix, hash_key, keys_equal
from tollway_control_plane._base import StoreBase
from tollway_control_plane._db import Transaction
from tollway_control_plane._errors import Conflict, KeyRejected, NotFound, ValidationError
from tollway_control_plane._records import Scope, VirtualKey, _records
from tollway_control_plane._util import (
    UNSET,
    Unset,
    dumps,
    format_time,
    loads,
    mint_secret,
    new_id,
    now,
    parse_time,
)
from tollway_control_plane._values import ROTATION_GRACE, _name
from tollway_control_plane.vkconfig import merge_patch, validate_key_config


class KeysMixin(StoreBase):
    def _checked_config(self, config: Any) -> dict[str, Any]:
        if config is None:
            return {}
        problems = validate_key_config(config, self.plugin_sections, outbound=self.outbound)
        if problems:
            raise ValidationError(problems)
        cleaned = merge_patch({}, config)  # drops null fields: null means "not set"
        assert isinstance(cleaned, dict)
        return cleaned

    @staticmethod
    def _expiry(value: str | datetime | None) -> str | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            dt = value
        else:
            from tollway_control_plane.validation import check_time

            dt = check_time("expires_at", value)
        return format_time(dt, micros=False)

    def _check_policy_for_key(self, policy_id: str, scope: Scope) -> None:
        policy = self.get_routing_policy(policy_id)
        if policy.organization_id != scope.organization_id:
            raise ValidationError(
                f"routing_policy_id: {policy_id} belongs to organization "
                f"{policy.organization_id}, the key to {scope.organization_id}"
            )
        visible = {p.id for p in self._visible_providers(scope)}
        hidden = [
            e.provider_id
            for e in policy.entries
            if not e.from_config and e.provider_id not in visible  # config-file: every key's
        ]
        if hidden:
            raise ValidationError(
                f"routing_policy_id: policy {policy_id} lists provider(s) "
                f"{', '.join(dict.fromkeys(hidden))} that a key scoped to {scope.label} cannot "
                "see; scope the key lower, or the providers higher"
            )

    def _key_row(self, tx: Transaction, key_id: str) -> dict[str, Any]:
        rows = tx.query("SELECT * FROM virtual_keys WHERE id = ?", (key_id,))
        if not rows:
            raise NotFound(_no_key(key_id))
        return rows[0]

    def create_key(
        self,
        *,
        name: str,
        scope: str | Scope | None = None,
        env: str = "live",
        config: Mapping[str, Any] | None = None,
        routing_policy_id: str | None = None,
        expires_at: str | datetime | None = None,
        principal_id: str | None = None,
    ) -> tuple[VirtualKey, str]:
        """Create a key; return it and its secret (the only time the secret is available)."""
        name = _name(name, "key")
        if env not in ("live", "test"):
            raise ValidationError(f"env: must be 'live' or 'test', not {env!r}")
        resolved = self.resolve_scope(scope)
        checked = self._checked_config(config)
        expiry = self._expiry(expires_at)
        if routing_policy_id:
            self._check_policy_for_key(routing_policy_id, resolved)
        secret = check_key_format(mint_secret(env))
        key_id = new_id("vk")
        ts = format_time(now())
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO virtual_keys (id, organization_id, team_id, project_id, scope_type, "
                "principal_id, name, env, display_prefix, secret_hash, status, config, "
                "routing_policy_id, expires_at, revision, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key_id,
                    resolved.organization_id,
                    resolved.team_id,
                    resolved.project_id,
                    resolved.type,
                    principal_id,
                    name,
                    env,
                    display_prefix(secret),
                    hash_key(self._pepper, secret),
                    "active",
                    dumps(checked),
                    routing_policy_id or None,
                    expiry,
                    1,
                    ts,
                    ts,
                ),
            )
            self._event(tx, "vk_updated", vk_id=key_id)
        return self.get_key(key_id), secret

    def get_key(self, key_id: str) -> VirtualKey:
        rows = self.db.query("SELECT * FROM virtual_keys WHERE id = ?", (key_id,))
        if not rows:
            raise NotFound(_no_key(key_id))
        return VirtualKey.from_row(rows[0])

    def list_keys(self, organization_id: str | None = None) -> list[VirtualKey]:
        if organization_id:
            rows = self.db.query(
                "SELECT * FROM virtual_keys WHERE organization_id = ? ORDER BY created_at, id",
                (organization_id,),
            )
        else:
            rows = self.db.query("SELECT * FROM virtual_keys ORDER BY created_at, id")
        return _records(rows, VirtualKey.from_row)

    def update_key(
        self,
        key_id: str,
        *,
        config: Mapping[str, Any] | Unset | None = UNSET,
        name: str | Unset = UNSET,
        routing_policy_id: str | Unset | None = UNSET,
        expires_at: str | datetime | Unset | None = UNSET,
        principal_id: str | Unset | None = UNSET,
    ) -> VirtualKey:
        """Change a key. ``config`` is a JSON merge patch on the current config (``null``
        clears a field; ``None`` for the whole argument clears the config); the result is
        validated as a whole."""
        sets: dict[str, Any] = {}
        if not isinstance(name, Unset):
            sets["name"] = _name(name, "key")
        if not isinstance(expires_at, Unset):
            sets["expires_at"] = self._expiry(expires_at)
        if not isinstance(principal_id, Unset):
            sets["principal_id"] = principal_id or None
        current = self.get_key(key_id)
        if current.status == "revoked":
            raise Conflict(f"{_revoked(key_id)}; it can no longer be changed (delete it instead)")
        if not isinstance(config, Unset):
            merged = {} if config is None else merge_patch(current.config, config)
            sets["config"] = dumps(self._checked_config(merged))
        if not isinstance(routing_policy_id, Unset):
            if routing_policy_id:
                self._check_policy_for_key(routing_policy_id, current.scope)
            sets["routing_policy_id"] = routing_policy_id or None
        with self.db.transaction() as tx:
            row = self._key_row(tx, key_id)
            if row["status"] == "revoked":
                raise Conflict(f"{_revoked(key_id)}; it can no longer be changed")
            if int(row["revision"]) != current.revision and "config" in sets:
                # A concurrent update landed between the read and this transaction: merge the
                # patch onto the newer config rather than overwrite it.
                latest = loads(row["config"]) or {}
                merged = {} if config is None else merge_patch(latest, config)
                sets["config"] = dumps(self._checked_config(merged))
            self._update_key_row(tx, key_id, sets)
            self._event(tx, "vk_updated", vk_id=key_id)
        return self.get_key(key_id)

    @staticmethod
    def _update_key_row(tx: Transaction, key_id: str, sets: Mapping[str, Any]) -> None:
        fields = dict(sets)
        fields["updated_at"] = format_time(now())
        assignments = ", ".join(f"{k} = ?" for k in fields)
        tx.execute(
            f"UPDATE virtual_keys SET {assignments}, revision = revision + 1 WHERE id = ?",
            (*fields.values(), key_id),
        )

    def rotate_key(
        self, key_id: str, *, grace: timedelta = ROTATION_GRACE
    ) -> tuple[VirtualKey, str]:
        """Give a key a new secret; the current one keeps working for ``grace`` (24 h).

        Rotating again within the grace period ends the older secret's grace at once (only
        the secret being replaced stays valid)."""
        with self.db.transaction() as tx:
            row = self._key_row(tx, key_id)
            if row["status"] == "revoked":
                raise Conflict(f"{_revoked(key_id)}; create a new key instead")
            secret = check_key_format(mint_secret(row["env"]))
            at = now()
            self._update_key_row(
                tx,
                key_id,
                {
                    "secret_hash": hash_key(self._pepper, secret),
                    "display_prefix": display_prefix(secret),
                    "previous_secret_hash": row["secret_hash"],
                    "previous_valid_until": format_time(at + grace),
                    "rotated_at": format_time(at),
                },
            )
            self._event(tx, "vk_rotated", vk_id=key_id)
        return self.get_key(key_id), secret

    def set_previous_valid_until(self, key_id: str, until: str | datetime | None) -> VirtualKey:
        """End (or move) the grace period of a rotated key's previous secret."""
        value = None
        if until is not None:
            try:
                value = format_time(until if isinstance(until, datetime) else parse_time(until))
            except ValueError as exc:
                raise ValidationError(f"previous_valid_until: {exc}") from None
        with self.db.transaction() as tx:
            self._key_row(tx, key_id)
            self._update_key_row(tx, key_id, {"previous_valid_until": value})
            self._event(tx, "vk_rotated", vk_id=key_id)
        return self.get_key(key_id)

    def revoke_key(self, key_id: str) -> VirtualKey:
        """Revoke a key at once and for good (revoking twice is a no-op)."""
        with self.db.transaction() as tx:
            row = self._key_row(tx, key_id)
            if row["status"] != "revoked":
                self._update_key_row(
                    tx,
                    key_id,
                    {"status": "revoked", "revoked_at": format_time(now())},
                )
                self._event(tx, "vk_revoked", vk_id=key_id)
        return self.get_key(key_id)

    def _set_status(self, key_id: str, status: str) -> VirtualKey:
        with self.db.transaction() as tx:
            row = self._key_row(tx, key_id)
            if row["status"] == "revoked":
                raise Conflict(f"{_revoked(key_id)}; revocation is final (create a new key)")
            if row["status"] != status:
                self._update_key_row(tx, key_id, {"status": status})
                self._event(tx, "vk_updated", vk_id=key_id)
        return self.get_key(key_id)

    def disable_key(self, key_id: str) -> VirtualKey:
        """Refuse the key until :meth:`enable_key` (reversible, unlike revoke)."""
        return self._set_status(key_id, "disabled")

    def enable_key(self, key_id: str) -> VirtualKey:
        return self._set_status(key_id, "active")

    def delete_key(self, key_id: str) -> None:
        with self.db.transaction() as tx:
            self._key_row(tx, key_id)
            tx.execute("DELETE FROM virtual_keys WHERE id = ?", (key_id,))
            self._event(tx, "vk_deleted", vk_id=key_id)

    def resolve_secret(self, secret: str, at: datetime | None = None) -> VirtualKey:
        """The key a presented secret belongs to, if it may be used now.

        Matches the current secret, or the previous one while its rotation grace lasts. Raises
        :class:`KeyRejected` with code ``unknown_key``, ``revoked``, ``disabled`` or
        ``expired``.
        """
        at = at or now()
        digest = hash_key(self._pepper, secret)
        rows = self.db.query("SELECT * FROM virtual_keys WHERE secret_hash = ?", (digest,))
        if rows and keys_equal(rows[0]["secret_hash"], digest):
            row = rows[0]
        else:
            rows = self.db.query(
                "SELECT * FROM virtual_keys WHERE previous_secret_hash = ?", (digest,)
            )
            if not rows:
                raise KeyRejected(
                    "unknown_key",
                    f"the virtual key {display_prefix(secret)}… is not known; check that the "
                    "whole secret was copied and that the key was not deleted",
                )
            row = rows[0]
            until = row["previous_valid_until"]
            if until is None or parse_time(until) <= at:
                raise KeyRejected(
                    "unknown_key",
                    f"the virtual key {display_prefix(secret)}… was rotated and this old secret "
                    "stopped working when its 24 h grace period ended; use the new secret",
                )
        key = VirtualKey.from_row(row)
        status = key.effective_status(at)
        if status == "revoked":
            raise KeyRejected(
                "revoked",
                f"the virtual key {key.display_prefix}… ({key.id}) was revoked; revocation is "
                "final — create a new key",
            )
        if status == "disabled":
            raise KeyRejected(
                "disabled",
                f"the virtual key {key.display_prefix}… ({key.id}) is disabled; an operator can "
                f"enable it again (tollway virtual-keys enable {key.id})",
            )
        if status == "expired":
            raise KeyRejected(
                "expired",
                f"the virtual key {key.display_prefix}… ({key.id}) expired at {key.expires_at}; "
                "create a new key, or move its expiry (tollway virtual-keys update "
                f"{key.id} --expires-at …)",
            )
        return key

    def active_key_page(
        self, after: str = "", limit: int = 100, at: datetime | None = None
    ) -> tuple[list[tuple[VirtualKey, list[str]]], str | None]:
        """One page of the keys a gateway may warm its auth cache with (the auth cache
        bootstrap): active, unexpired keys in id order after ``after``, each with the hashes of
        the secrets that work now (the current one, and the previous one in its rotation grace).
        Returns (page, cursor of the next page or None)."""
        at = at or now()
        rows = self.db.query(
            "SELECT * FROM virtual_keys WHERE status = 'active' AND id > ? ORDER BY id LIMIT ?",
            (after, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        page: list[tuple[VirtualKey, list[str]]] = []
        for row in rows:
            key = VirtualKey.from_row(row)
            if key.effective_status(at) != "active":
                continue
            hashes = [row["secret_hash"]]
            until = row["previous_valid_until"]
            if row["previous_secret_hash"] and until is not None and parse_time(until) > at:
                hashes.append(row["previous_secret_hash"])
            page.append((key, hashes))
        return page, (rows[-1]["id"] if more and rows else None)


def _no_key(key_id: str) -> str:
    return f"no virtual key {key_id!r}; `tollway virtual-keys list` shows the keys"


def _revoked(key_id: str) -> str:
    return f"virtual key {key_id} is revoked"
