"""What every part of the store shares: the database, the credential box, the store's id, its
lifecycle (open, close) and the change feed every write appends to; plus, as abstract methods,
the few look-ups one resource's part makes of another's (:class:`~tollway_control_plane.store.
Store` composes the parts and so implements them all)."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import attrs

from tollway.outbound import OutboundPolicy
from tollway_control_plane._crypto import CredentialBox
from tollway_control_plane._db import Database, DatabaseError, Transaction
from tollway_control_plane._records import (
    ChangeEvent,
    ModelProvider,
    Organization,
    RoutingPolicy,
    Scope,
    VirtualKey,
)
from tollway_control_plane._util import format_time, now
from tollway_control_plane._values import CHANGE_KINDS, KEY_SCOPES


def store_target(data_dir: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> str:
    """Where the store lives: ``TOLLWAY_DATABASE_URL`` if set, else ``<data_dir>/tollway.db``."""
    env = os.environ if env is None else env
    url = env.get("TOLLWAY_DATABASE_URL", "").strip()
    if url:
        if not url.startswith(("postgresql://", "postgres://", "sqlite://")):
            raise DatabaseError(
                f"TOLLWAY_DATABASE_URL must be postgresql://… (or sqlite:///path), not "
                f"{url.split(':', 1)[0]}:…"
            )
        return url
    return str(Path(data_dir) / "tollway.db")


def read_store_id(db: Database) -> str | None:
    """The id in ``store_meta`` (None: a store not migrated to version 3 yet, or no store)."""
    try:
        rows = db.query("SELECT value FROM store_meta WHERE name = 'store_id'")
    except Exception:
        return None
    return str(rows[0]["value"]) if rows else None


# --------------------------------------------------------------------------------------------


class StoreBase(abc.ABC):
    """The shared state of the store's parts; see :class:`~tollway_control_plane.store.Store`."""

    def __init__(
        self,
        db: Database,
        pepper: bytes,
        *,
        allow_private_base_urls: bool = False,
        plugin_sections: Callable[[], Iterable[str]] | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.db = db
        self._pepper = pepper
        self._box: CredentialBox | None = None
        self.outbound = outbound or OutboundPolicy(guard=not allow_private_base_urls)
        self.plugin_sections = plugin_sections
        self._store_id: str | None = None

    @property
    def allow_private_base_urls(self) -> bool:
        """True when the SSRF guard is off (``ENVIRONMENT=local``)."""
        return not self.outbound.guard

    @allow_private_base_urls.setter
    def allow_private_base_urls(self, value: bool) -> None:
        self.outbound = attrs.evolve(self.outbound, guard=not value)

    @classmethod
    def open(
        cls,
        target: str | os.PathLike[str],
        pepper: bytes,
        *,
        allow_private_base_urls: bool = False,
        plugin_sections: Callable[[], Iterable[str]] | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> Self:
        """Open (creating if needed) and migrate the store at ``target``: a SQLite file path or
        a ``postgresql://`` URL."""
        db = Database(target)
        try:
            db.migrate()
        except BaseException:
            db.close()
            raise
        return cls(
            db,
            pepper,
            allow_private_base_urls=allow_private_base_urls,
            plugin_sections=plugin_sections,
            outbound=outbound,
        )

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.db!r})"

    @property
    def box(self) -> CredentialBox:
        if self._box is None:
            self._box = CredentialBox(self._pepper)
        return self._box

    @property
    def store_id(self) -> str:
        """The store's random id, made when it was created (``store_meta``); not a secret."""
        if self._store_id is None:
            self._store_id = read_store_id(self.db) or ""
        return self._store_id

    def ping(self) -> None:
        """Raise if the database does not answer (readiness)."""
        self.db.query("SELECT 1 AS ok")

    # --- change feed --------------------------------------------------------------------

    @staticmethod
    def _event(
        tx: Transaction, kind: str, *, vk_id: str | None = None, provider_id: str | None = None
    ) -> None:
        assert kind in CHANGE_KINDS, kind
        tx.execute(
            "INSERT INTO change_events (kind, vk_id, provider_id, created_at) VALUES (?, ?, ?, ?)",
            (kind, vk_id, provider_id, format_time(now())),
        )

    def max_change_id(self) -> int:
        rows = self.db.query("SELECT MAX(id) AS m FROM change_events")
        return int(rows[0]["m"] or 0)

    def changes_since(self, cursor: int, limit: int = 1000) -> list[ChangeEvent]:
        rows = self.db.query(
            "SELECT id, kind, vk_id, provider_id, created_at FROM change_events "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (cursor, limit),
        )
        return [ChangeEvent.from_row(r) for r in rows]

    # --- what one resource's part looks up in another's -----------------------------------

    @abc.abstractmethod
    def get_organization(self, org_id: str) -> Organization: ...

    @abc.abstractmethod
    def resolve_scope(
        self,
        scope: str | Scope | None,
        allowed: Sequence[str] = KEY_SCOPES,
        organization_id: str | None = None,
    ) -> Scope: ...

    @abc.abstractmethod
    def resolve_scope_id(self, kind: str, ident: str | None, field: str = "scope") -> str: ...

    @abc.abstractmethod
    def get_key(self, key_id: str) -> VirtualKey: ...

    @abc.abstractmethod
    def get_provider(self, provider_id: str) -> ModelProvider: ...

    @abc.abstractmethod
    def _visible_providers(self, scope: Scope) -> list[ModelProvider]: ...

    @abc.abstractmethod
    def get_routing_policy(self, policy_id: str) -> RoutingPolicy: ...

    @abc.abstractmethod
    def ledger_spend(self, queries: Sequence[Mapping[str, Any]]) -> list[int]: ...
