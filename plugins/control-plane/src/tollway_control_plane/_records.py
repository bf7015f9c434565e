"""The records the store reads and returns: frozen attrs classes, one per resource."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Self, TypeVar

import attrs

from tollway.egress import PROVIDER_KEY as PROXY_KEY
from tollway.egress import mask_url
from tollway.outbound import redact_userinfo
from tollway_control_plane._util import loads, now, parse_time
from tollway_control_plane._values import format_usd

log = logging.getLogger("tollway_control_plane")


def _as_stored(value: Any) -> Any:
    return value


def _json_object(value: Any) -> dict[str, Any]:
    return loads(value) or {}


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@attrs.frozen
class _Row:
    """A record read from one row of its table: each field from the column of its name (or the
    one ``_COLUMNS`` names), through its reader in ``_READ`` (default: as stored)."""

    _READ: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}
    _COLUMNS: ClassVar[Mapping[str, str]] = {}

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            **{
                f.name: cls._READ.get(f.name, _as_stored)(row[cls._COLUMNS.get(f.name, f.name)])
                for f in attrs.fields(cls)
            }
        )


@attrs.frozen
class Organization(_Row):
    id: str
    name: str
    created_at: str
    updated_at: str


@attrs.frozen
class Team(_Row):
    id: str
    organization_id: str
    name: str
    created_at: str
    updated_at: str


@attrs.frozen
class Project(_Row):
    id: str
    organization_id: str
    team_id: str
    name: str
    created_at: str
    updated_at: str


@attrs.frozen
class Scope:
    """Where a key, provider or budget lives. ``type`` is organization | team | project (or a
    budget-only type); the ids are resolved (a team scope knows its organization)."""

    type: str
    organization_id: str
    team_id: str | None = None
    project_id: str | None = None
    #: For budget-only scope types (virtual_key, principal, end_user): their id.
    other_id: str | None = None

    @property
    def id(self) -> str:
        if self.type == "organization":
            return self.organization_id
        if self.type == "team":
            assert self.team_id is not None
            return self.team_id
        if self.type == "project":
            assert self.project_id is not None
            return self.project_id
        assert self.other_id is not None
        return self.other_id

    @property
    def label(self) -> str:
        """``project:proj_default``."""
        return f"{self.type}:{self.id}"


@attrs.frozen
class VirtualKey(_Row):
    """A virtual key as the store keeps it (never the secret or its hashes)."""

    _READ = {"config": _json_object, "revision": int}

    id: str
    name: str
    env: str
    display_prefix: str
    status: str
    scope_type: str
    organization_id: str
    team_id: str | None
    project_id: str | None
    principal_id: str | None
    config: dict[str, Any]
    routing_policy_id: str | None
    expires_at: str | None
    previous_valid_until: str | None
    revision: int
    created_at: str
    updated_at: str
    rotated_at: str | None
    revoked_at: str | None

    @property
    def scope(self) -> Scope:
        return Scope(self.scope_type, self.organization_id, self.team_id, self.project_id)

    def effective_status(self, at: datetime | None = None) -> str:
        """``active``, ``disabled``, ``revoked`` or ``expired`` (``expires_at`` has passed)."""
        if self.status != "active":
            return self.status
        if self.expires_at is None:
            return "active"
        try:
            expires = parse_time(self.expires_at)
        except ValueError:
            # Stored before expiries were range-checked: fail closed (the key stays listable;
            # an update with a valid --expires-at brings it back).
            log.warning("virtual key %s has an unreadable expires_at %r", self.id, self.expires_at)
            return "expired"
        return "expired" if expires <= (at or now()) else "active"

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["status"] = self.effective_status()
        data["scope"] = self.scope.label
        return data


@attrs.frozen
class ModelProvider(_Row):
    """A model provider credential. ``api_key_hint`` is the masked credential (``sk-…abcd``);
    the credential itself only leaves the store in a key's config bundle."""

    _COLUMNS = {"api_key_hint": "credential_hint"}
    _READ = {
        "models": loads,
        "priority": int,
        "config": _json_object,
        "rpm": _opt_int,
        "tpm": _opt_int,
        "rpd": _opt_int,
        "revision": int,
    }

    id: str
    name: str
    type: str
    scope_type: str
    scope_id: str
    organization_id: str
    base_url: str | None
    api_key_hint: str | None
    models: list[str] | None
    priority: int
    config: dict[str, Any]
    rpm: int | None
    tpm: int | None
    rpd: int | None
    revision: int
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.base_url:  # never show a password written into an old row's URL
            data["base_url"] = redact_userinfo(self.base_url)
        data["api_key"] = data.pop("api_key_hint")
        data["scope"] = f"{self.scope_type}:{self.scope_id}"
        proxy = data["config"].get(PROXY_KEY)
        if isinstance(proxy, str):
            # The proxy URL's credentials are secrets, like the API key: shown masked.
            data["config"][PROXY_KEY] = mask_url(proxy)
        return data


@attrs.frozen
class PolicyEntry:
    """One entry of a routing policy: a provider, and optionally the model to ask it for.

    ``provider_id`` is a stored provider's id (``mp_…``) or the name of a provider in the
    gateway's config file (:attr:`from_config`)."""

    provider_id: str
    model: str | None = None
    #: Its share under the ``weighted`` strategy (0: fallback only).
    weight: int = 1

    @property
    def from_config(self) -> bool:
        """Whether this entry names a config-file provider (a name, not an ``mp_`` id)."""
        return not self.provider_id.startswith("mp_")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "provider_id": self.provider_id,
            "model": self.model,
            "weight": self.weight,
        }
        if self.from_config:
            out["source"] = "config"
        return out

    def __str__(self) -> str:
        text = f"{self.provider_id}:{self.model}" if self.model else self.provider_id
        return text if self.weight == 1 else f"{text}:{self.weight}"


@attrs.frozen
class RoutingPolicy:
    id: str
    organization_id: str
    name: str
    is_default: bool
    entries: tuple[PolicyEntry, ...]
    revision: int
    created_at: str
    updated_at: str
    #: How a request walks :attr:`entries` (:data:`tollway.routing.STRATEGIES`).
    strategy: str = "ordered"

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["entries"] = [e.to_json() for e in self.entries]
        return data


@attrs.frozen
class Budget(_Row):
    """A budget. ``limit_usd`` is micro-USD (1 USD = 1 000 000)."""

    _READ = {"limit_usd": int}

    id: str
    organization_id: str
    scope_type: str
    scope_id: str
    name: str | None
    window: str
    limit_usd: int
    on_breach: str
    reset_at: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["limit_micro_usd"] = self.limit_usd
        data["limit_usd"] = format_usd(self.limit_usd)
        data["scope"] = f"{self.scope_type}:{self.scope_id}"
        return data

    def to_bundle(self) -> dict[str, Any]:
        """The budget as a key's config bundle carries it (``budgets`` list; see
        docs/plugins/budgets.md): what a gateway needs to enforce it, money in micro-USD."""
        return {
            "id": self.id,
            "name": self.name,
            "scope_type": self.scope_type,
            "scope_id": self.scope_id,
            "window": self.window,
            "limit_micro_usd": self.limit_usd,
            "on_breach": self.on_breach,
            "reset_at": self.reset_at,
        }


@attrs.frozen
class ChangeEvent(_Row):
    _READ = {"id": int}

    id: int
    kind: str
    vk_id: str | None
    provider_id: str | None
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "vk_id": self.vk_id,
            "provider_id": self.provider_id,
        }


R = TypeVar("R")


def _records(rows: Iterable[Mapping[str, Any]], make: Callable[[Mapping[str, Any]], R]) -> list[R]:
    """``make(row)`` for each row; a row that cannot be read (stored by an older version without
    today's checks) is skipped with a logged warning, so one bad row never breaks a listing."""
    out = []
    for row in rows:
        try:
            out.append(make(row))
        except Exception as exc:
            log.warning(
                "skipped unreadable row %r of a listing: %s: %s",
                row.get("id"),
                type(exc).__name__,
                exc,
            )
    return out
