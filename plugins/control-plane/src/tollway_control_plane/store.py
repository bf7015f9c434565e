"""The control-plane store: organizations, teams, projects, model providers, routing policies,
virtual keys, budgets, the spend ledger and the change feed.

Embedded default: a SQLite file ``<data_dir>/tollway.db``; ``TOLLWAY_DATABASE_URL=
postgresql://…`` selects PostgreSQL (same schema, same numbered migrations, applied at open).
The API is synchronous — the HTTP layer calls it from worker threads
(``asyncio.to_thread``). Every write that changes what a gateway serves appends a change event
in the same transaction.

Errors (all :class:`StoreError`, whose ``status`` suggests the HTTP status)::

    StoreError
    ├── NotFound          404  no such id
    ├── Conflict          409  the write contradicts the current state (revoked key, name taken)
    ├── ValidationError   422  bad input; ``problems`` lists "path: message" lines
    └── KeyRejected       401  resolve: ``code`` is unknown_key | revoked | disabled | expired
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import attrs

from tollway.egress import PROVIDER_KEY as PROXY_KEY
from tollway.egress import mask_url, proxy_problem
from tollway.keys import check_key_format, display_prefix, hash_key, keys_equal
from tollway.outbound import ALLOW_CIDRS_ENV, OutboundPolicy, redact_userinfo
from tollway_control_plane._crypto import CredentialBox, mask_secret
from tollway_control_plane._db import Database, DatabaseError, IntegrityError, Transaction
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
from tollway_control_plane.vkconfig import merge_patch, validate_key_config

#: What a stored provider's SSRF refusal suggests.
STORED_PROVIDER_HINT = (
    f"if it is a model server on your own network, the operator can list its network in "
    f"{ALLOW_CIDRS_ENV} on the gateway and the control plane"
)
#: Why a stored provider cannot set ``allow_private_network``.
PRIVATE_NETWORK_REFUSED = (
    "a stored provider cannot allow private networks (only the gateway's config file can); "
    f"ask the operator to list the provider's network in {ALLOW_CIDRS_ENV} on the gateway and "
    "the control plane"
)

__all__ = [
    "BUDGET_SCOPES",
    "BUDGET_WINDOWS",
    "CHANGE_KINDS",
    "DEFAULT_ORGANIZATION",
    "DEFAULT_PROJECT",
    "DEFAULT_TEAM",
    "LEDGER_COLUMNS",
    "PER_END_USER",
    "PRICE_FIELDS",
    "PRIVATE_NETWORK_REFUSED",
    "PROVIDER_TYPES",
    "ROTATION_GRACE",
    "STORED_PROVIDER_HINT",
    "Budget",
    "ChangeEvent",
    "Conflict",
    "DatabaseError",
    "KeyRejected",
    "ModelProvider",
    "NotFound",
    "Organization",
    "PolicyEntry",
    "Project",
    "RoutingPolicy",
    "Scope",
    "Store",
    "StoreError",
    "Team",
    "ValidationError",
    "VirtualKey",
    "check_ledger_entry",
    "check_prices",
    "check_spend_query",
    "format_usd",
    "parse_usd",
    "read_store_id",
    "slug",
    "store_target",
]

DEFAULT_ORGANIZATION = "org_default"
DEFAULT_TEAM = "team_default"
DEFAULT_PROJECT = "proj_default"
PROVIDER_TYPES = ("openai", "anthropic", "azure", "bedrock", "vertex", "gemini", "custom")
KEY_SCOPES = ("organization", "team", "project")
BUDGET_SCOPES = ("organization", "team", "project", "virtual_key", "principal", "end_user")
BUDGET_WINDOWS = ("hour", "day", "week", "month", "total")
ON_BREACH = ("block", "warn")
CHANGE_KINDS = (
    "vk_updated",
    "vk_rotated",
    "vk_revoked",
    "vk_deleted",
    "provider_updated",
    "policy_changed",
    "budget_changed",
)
ROTATION_GRACE = timedelta(hours=24)
#: The largest amount of micro-USD a store column holds (signed 64-bit).
MAX_MICRO_USD = 2**63 - 1
log = logging.getLogger("tollway_control_plane")
_SCOPE_ALIASES = {
    "org": "organization",
    "organisation": "organization",
    "vk": "virtual_key",
    "key": "virtual_key",
    "virtual-key": "virtual_key",
    "end-user": "end_user",
}
#: ``end_user:*``: a budget that caps each end user of its organization separately.
PER_END_USER = "*"
#: What a ledger entry carries (POST /api/internal/gateway/ledger), in column order.
LEDGER_COLUMNS = (
    "request_id",
    "created_at",
    "organization_id",
    "team_id",
    "project_id",
    "vk_id",
    "principal_id",
    "end_user_id",
    "provider_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "status",
    "usage_estimated",
    "gateway_node_id",
)
_LEDGER_TEXT = frozenset(LEDGER_COLUMNS[:10]) | {"gateway_node_id"}
_LEDGER_INT = frozenset(LEDGER_COLUMNS[10:16]) | {"usage_estimated"}
USAGE_SUMS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)
_LEDGER_COLUMN = {
    "organization": "organization_id",
    "team": "team_id",
    "project": "project_id",
    "virtual_key": "vk_id",
    "principal": "principal_id",
    "end_user": "end_user_id",
}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class StoreError(Exception):
    """A store operation was refused; the message says what to do."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class ValidationError(StoreError):
    """Bad input. ``problems``: one ``path: message`` line each."""

    status = 422

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class KeyRejected(StoreError):
    """A presented secret does not resolve to a usable key (``code`` says why)."""

    status = 401

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Organization:
    id: str
    name: str
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Team:
    id: str
    organization_id: str
    name: str
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Project:
    id: str
    organization_id: str
    team_id: str
    name: str
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


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
class VirtualKey:
    """A virtual key as the store keeps it (never the secret or its hashes)."""

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
        data = attrs.asdict(self)
        data["status"] = self.effective_status()
        data["scope"] = self.scope.label
        return data

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VirtualKey:
        return cls(
            id=row["id"],
            name=row["name"],
            env=row["env"],
            display_prefix=row["display_prefix"],
            status=row["status"],
            scope_type=row["scope_type"],
            organization_id=row["organization_id"],
            team_id=row["team_id"],
            project_id=row["project_id"],
            principal_id=row["principal_id"],
            config=loads(row["config"]) or {},
            routing_policy_id=row["routing_policy_id"],
            expires_at=row["expires_at"],
            previous_valid_until=row["previous_valid_until"],
            revision=int(row["revision"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            rotated_at=row["rotated_at"],
            revoked_at=row["revoked_at"],
        )


@attrs.frozen
class ModelProvider:
    """A model provider credential. ``api_key_hint`` is the masked credential (``sk-…abcd``);
    the credential itself only leaves the store in a key's config bundle."""

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
        data = attrs.asdict(self)
        if self.base_url:  # never show a password written into an old row's URL
            data["base_url"] = redact_userinfo(self.base_url)
        data["api_key"] = data.pop("api_key_hint")
        data["scope"] = f"{self.scope_type}:{self.scope_id}"
        proxy = data["config"].get(PROXY_KEY)
        if isinstance(proxy, str):
            # The proxy URL's credentials are secrets, like the API key: shown masked.
            data["config"][PROXY_KEY] = mask_url(proxy)
        return data

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ModelProvider:
        return cls(
            id=row["id"],
            name=row["name"],
            type=row["type"],
            scope_type=row["scope_type"],
            scope_id=row["scope_id"],
            organization_id=row["organization_id"],
            base_url=row["base_url"],
            api_key_hint=row["credential_hint"],
            models=loads(row["models"]),
            priority=int(row["priority"]),
            config=loads(row["config"]) or {},
            rpm=_opt_int(row["rpm"]),
            tpm=_opt_int(row["tpm"]),
            rpd=_opt_int(row["rpd"]),
            revision=int(row["revision"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@attrs.frozen
class PolicyEntry:
    """One entry of a routing policy: a provider, and optionally the model to ask it for."""

    provider_id: str
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"provider_id": self.provider_id, "model": self.model}

    def __str__(self) -> str:
        return f"{self.provider_id}:{self.model}" if self.model else self.provider_id


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

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["entries"] = [e.to_json() for e in self.entries]
        return data


@attrs.frozen
class Budget:
    """A budget. ``limit_usd`` is micro-USD (1 USD = 1 000 000)."""

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
        data = attrs.asdict(self)
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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Budget:
        return cls(
            id=row["id"],
            organization_id=row["organization_id"],
            scope_type=row["scope_type"],
            scope_id=row["scope_id"],
            name=row["name"],
            window=row["window"],
            limit_usd=int(row["limit_usd"]),
            on_breach=row["on_breach"],
            reset_at=row["reset_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@attrs.frozen
class ChangeEvent:
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


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


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


def parse_usd(value: str | int | float | Decimal) -> int:
    """``"12.50"`` → 12 500 000 micro-USD. Refuses negatives and sub-micro precision."""
    try:
        amount = Decimal(str(value).strip().lstrip("$"))
    except InvalidOperation:
        raise ValidationError(
            f"limit: {value!r} is not an amount in USD (e.g. 100 or 12.50)"
        ) from None
    if not amount.is_finite() or amount < 0:
        raise ValidationError(f"limit: {value!r} must be a positive amount in USD")
    micros = amount * 1_000_000
    if micros > MAX_MICRO_USD:
        raise ValidationError(
            f"limit: {value!r} is over the largest amount, {format_usd(MAX_MICRO_USD)} USD"
        )
    if micros != micros.to_integral_value():
        raise ValidationError(f"limit: {value!r} has more precision than a micro-dollar")
    return int(micros)


def format_usd(micros: int) -> str:
    """12 500 000 → ``"12.50"`` (at least two decimals, no trailing zeros past them)."""
    text = f"{Decimal(micros) / 1_000_000:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def parse_scope(text: str | None, allowed: Sequence[str] = KEY_SCOPES) -> tuple[str, str | None]:
    """``"project:proj_x"`` → ``("project", "proj_x")``; ``None``/``"project"`` → no id."""
    if text is None or not text.strip():
        return "organization", None
    kind, _, ident = text.strip().partition(":")
    kind = kind.strip().lower()
    kind = _SCOPE_ALIASES.get(kind, kind)
    if kind not in allowed:
        raise ValidationError(
            f"scope: {text!r} is not a scope; write one of {', '.join(allowed)}, optionally "
            "followed by :ID (e.g. project:proj_default)"
        )
    return kind, (ident.strip() or None)


def slug(name: str) -> str:
    """``"Acme Corp."`` → ``"acme-corp"``: how a scope's name may be written in ``--scope``."""
    return re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")


def _micro_usd(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= MAX_MICRO_USD


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValidationError(f"{name}: must be a positive integer (or unset for no limit)")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"name: the {what} needs a non-empty name")
    if len(value) > 200:
        raise ValidationError(f"name: at most 200 characters (got {len(value)})")
    return value.strip()


def check_ledger_entry(entry: Any, where: str = "entry") -> dict[str, Any]:
    """A gateway's ledger entry (wire form, see docs/plugins/budgets.md) as ledger columns.

    Raises :class:`ValidationError` naming the field. Unknown fields are ignored (a newer
    gateway may send more); ``cost_micro_usd`` is stored in ``cost_usd`` (micro-USD);
    ``created_at`` is normalised to the ledger's ISO-8601 form so window sums compare as text.
    """
    if not isinstance(entry, Mapping):
        raise ValidationError(f"{where}: must be an object")
    row: dict[str, Any] = {}
    for column in LEDGER_COLUMNS:
        wire = "cost_micro_usd" if column == "cost_usd" else column
        value = entry.get(wire)
        if column in ("request_id", "created_at") and (
            not isinstance(value, str) or not value or len(value) > 128
        ):
            raise ValidationError(f"{where}.{wire}: required, a non-empty string")
        if column == "created_at":
            try:
                value = format_time(parse_time(value))
            except ValueError as exc:
                raise ValidationError(f"{where}.created_at: {exc}") from None
        elif column in _LEDGER_TEXT:
            if value is not None and (not isinstance(value, str) or len(value) > 512):
                raise ValidationError(f"{where}.{wire}: must be a string (at most 512) or null")
        elif column == "status":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValidationError(f"{where}.status: must be an integer or null")
        elif column == "usage_estimated":
            value = int(bool(value))
        else:
            value = 0 if value is None else value
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"{where}.{wire}: must be a non-negative integer")
        row[column] = value
    return row


def check_spend_query(query: Any, where: str = "query") -> dict[str, Any]:
    """A ``spend`` query ``{organization_id, scope_type, scope_id, since, until?}``, checked."""
    if not isinstance(query, Mapping):
        raise ValidationError(f"{where}: must be an object")
    scope_type = query.get("scope_type")
    if scope_type not in BUDGET_SCOPES:
        raise ValidationError(f"{where}.scope_type: must be one of {', '.join(BUDGET_SCOPES)}")
    out: dict[str, Any] = {"scope_type": scope_type}
    for field in ("organization_id", "scope_id", "since", "until"):
        value = query.get(field)
        optional = field in ("since", "until")
        if value is None and optional:
            out[field] = None
            continue
        if not isinstance(value, str) or (not value and not optional):
            raise ValidationError(f"{where}.{field}: must be a non-empty string")
        if optional and value:
            try:
                value = format_time(parse_time(value))
            except ValueError as exc:
                raise ValidationError(f"{where}.{field}: {exc}") from None
        out[field] = value
    return out


#: Fields of one model's entry in a provider's ``config.prices`` (USD per million tokens).
PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")


def check_prices(prices: Any) -> list[str]:
    """Problems with a provider config's ``prices`` (``{model: {input_per_mtok, …}}``, USD per
    million tokens, read by the budgets plugin), one ``config.prices…: message`` line each."""
    if prices is None:
        return []
    if not isinstance(prices, Mapping):
        return ['config.prices: must be an object {"<model>": {"input_per_mtok": 2.5, …}}']
    problems = []
    for model, entry in prices.items():
        where = f"config.prices.{model}"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: must be an object with {', '.join(PRICE_FIELDS)}")
            continue
        for field, value in entry.items():
            if field not in PRICE_FIELDS:
                known = ", ".join(PRICE_FIELDS)
                problems.append(f"{where}.{field}: unknown field (known: {known})")
            elif isinstance(value, bool) or not isinstance(value, int | float | str):
                problems.append(f"{where}.{field}: must be a number of USD per million tokens")
            else:
                try:
                    amount = Decimal(str(value))
                except InvalidOperation:
                    amount = Decimal(-1)
                if not amount.is_finite() or amount < 0:
                    problems.append(f"{where}.{field}: {value!r} must be a non-negative number")
    return problems


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
# The store
# --------------------------------------------------------------------------------------------


class Store:
    """The control-plane store. Open with :meth:`open`; thread-safe; close with :meth:`close`.

    ``pepper`` hashes key secrets and derives the credential-encryption key: it must be the
    same for the life of the store. ``outbound`` is the SSRF guard every URL written here is
    checked with (provider base URLs and token endpoints, guardrail webhook URLs in key configs);
    ``allow_private_base_urls=True`` is the guard of ``ENVIRONMENT=local`` (off).
    ``plugin_sections`` returns the names of installed plugins' key-config sections.
    """

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
    ) -> Store:
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

    def __enter__(self) -> Store:
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
        return [
            ChangeEvent(int(r["id"]), r["kind"], r["vk_id"], r["provider_id"], r["created_at"])
            for r in rows
        ]

    # --- organizations, teams, projects -------------------------------------------------

    def create_organization(self, name: str) -> Organization:
        name = _name(name, "organization")
        ts = format_time(now())
        org = Organization(new_id("org"), name, ts, ts)
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO organizations (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                    (org.id, org.name, ts, ts),
                )
        except IntegrityError:
            raise Conflict(f"an organization named {name!r} already exists") from None
        return org

    def create_team(self, name: str, organization_id: str = DEFAULT_ORGANIZATION) -> Team:
        name = _name(name, "team")
        self.get_organization(organization_id)
        ts = format_time(now())
        team = Team(new_id("team"), organization_id, name, ts, ts)
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO teams (id, organization_id, name, created_at, updated_at) "
                    "VALUES (?,?,?,?,?)",
                    (team.id, organization_id, name, ts, ts),
                )
        except IntegrityError:
            raise Conflict(f"organization {organization_id} already has a team {name!r}") from None
        return team

    def create_project(self, name: str, team_id: str = DEFAULT_TEAM) -> Project:
        name = _name(name, "project")
        team = self.get_team(team_id)
        ts = format_time(now())
        project = Project(new_id("proj"), team.organization_id, team.id, name, ts, ts)
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO projects (id, organization_id, team_id, name, created_at, "
                    "updated_at) VALUES (?,?,?,?,?,?)",
                    (project.id, project.organization_id, team.id, name, ts, ts),
                )
        except IntegrityError:
            raise Conflict(f"team {team_id} already has a project {name!r}") from None
        return project

    def get_organization(self, org_id: str) -> Organization:
        rows = self.db.query("SELECT * FROM organizations WHERE id = ?", (org_id,))
        if not rows:
            raise NotFound(f"no organization {org_id!r}")
        return Organization(**rows[0])

    def get_team(self, team_id: str) -> Team:
        rows = self.db.query("SELECT * FROM teams WHERE id = ?", (team_id,))
        if not rows:
            raise NotFound(f"no team {team_id!r}")
        return Team(**rows[0])

    def get_project(self, project_id: str) -> Project:
        rows = self.db.query("SELECT * FROM projects WHERE id = ?", (project_id,))
        if not rows:
            raise NotFound(f"no project {project_id!r}")
        return Project(**rows[0])

    def list_organizations(self) -> list[Organization]:
        rows = self.db.query("SELECT * FROM organizations ORDER BY created_at, id")
        return [Organization(**r) for r in rows]

    def list_teams(self) -> list[Team]:
        rows = self.db.query("SELECT * FROM teams ORDER BY created_at, id")
        return [Team(**r) for r in rows]

    def list_projects(self) -> list[Project]:
        rows = self.db.query("SELECT * FROM projects ORDER BY created_at, id")
        return [Project(**r) for r in rows]

    def resolve_scope(
        self,
        scope: str | Scope | None,
        allowed: Sequence[str] = KEY_SCOPES,
        organization_id: str | None = None,
    ) -> Scope:
        """``"project:proj_x"`` (or ``"team"``, ``None`` …) → a resolved :class:`Scope`.

        A scope without an id means the ``default`` one; ``None`` means the default
        organization. ``organization_id`` places a ``principal`` or ``end_user`` scope (their
        ids are not the store's, so they cannot name their organization; default: the default
        organization).
        """
        if isinstance(scope, Scope):
            return scope
        kind, ident = parse_scope(scope, allowed)
        if kind == "organization":
            org = self.get_organization(self.resolve_scope_id(kind, ident))
            return Scope("organization", org.id)
        if kind == "team":
            team = self.get_team(self.resolve_scope_id(kind, ident))
            return Scope("team", team.organization_id, team.id)
        if kind == "project":
            project = self.get_project(self.resolve_scope_id(kind, ident))
            return Scope("project", project.organization_id, project.team_id, project.id)
        if not ident:
            raise ValidationError(f"scope: a {kind} budget needs an id ({kind}:ID)")
        if kind == "virtual_key":
            key = self.get_key(ident)
            return Scope(kind, key.organization_id, key.team_id, key.project_id, other_id=key.id)
        org_id = self.resolve_scope_id("organization", organization_id, "organization_id")
        return Scope(kind, org_id, other_id=ident)

    def resolve_scope_id(self, kind: str, ident: str | None, field: str = "scope") -> str:
        """The id of the organization, team or project ``ident`` names: its id, ``default``
        (or nothing: the default one), its name or its slug (the name in lower case, runs of
        other characters as ``-``), case-insensitively. Raises :class:`ValidationError` naming
        ``field`` and the candidates when nothing or more than one matches."""
        defaults = {
            "organization": DEFAULT_ORGANIZATION,
            "team": DEFAULT_TEAM,
            "project": DEFAULT_PROJECT,
        }
        text = (ident or "").strip()
        if not text or text.lower() == "default":
            return defaults[kind]
        rows: list[Organization | Team | Project]
        if kind == "organization":
            rows = list(self.list_organizations())
        elif kind == "team":
            rows = list(self.list_teams())
        else:
            rows = list(self.list_projects())
        exact = [r for r in rows if r.id == text]
        if exact:
            return exact[0].id
        lower, wanted = text.lower(), slug(text)
        found = [
            r for r in rows if lower in (r.id.lower(), r.name.lower()) or slug(r.name) == wanted
        ]
        if len(found) == 1:
            return found[0].id
        orgs = {o.id: o.name for o in self.list_organizations()}
        teams = {t.id: t.name for t in self.list_teams()}

        def where(r: Organization | Team | Project) -> str:
            if isinstance(r, Project):
                return f"{r.id} ({r.name}, team {teams.get(r.team_id, r.team_id)})"
            if isinstance(r, Team):
                return f"{r.id} ({r.name}, organization {orgs.get(r.organization_id, '?')})"
            return f"{r.id} ({r.name})"

        if found:
            raise ValidationError(
                f"{field}: {kind} {text!r} is ambiguous: "
                + ", ".join(where(r) for r in found)
                + "; give the id"
            )
        known = ", ".join(where(r) for r in rows[:20]) or "none"
        more = f" and {len(rows) - 20} more" if len(rows) > 20 else ""
        raise ValidationError(
            f"{field}: no {kind} {text!r} (by id, name or slug); {kind}s: {known}{more}"
        )

    # --- virtual keys -------------------------------------------------------------------

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
        hidden = [e.provider_id for e in policy.entries if e.provider_id not in visible]
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

    # --- model providers ----------------------------------------------------------------

    def _check_base_url(self, base_url: str | None, ptype: str) -> str | None:
        if base_url is None or base_url == "":
            if ptype == "custom":
                raise ValidationError("base_url: a custom (OpenAI-compatible) provider needs one")
            return None
        problem = self.outbound.url_problem(base_url, hint=STORED_PROVIDER_HINT)
        if problem is not None:
            raise ValidationError(f"base_url: {problem}")
        return base_url

    @staticmethod
    def _check_models(models: Any) -> list[str] | None:
        if models is None:
            return None
        if not isinstance(models, list | tuple) or not all(
            isinstance(m, str) and m for m in models
        ):
            raise ValidationError("models: must be a list of model ids or trailing-* globs")
        for m in models:
            if "*" in m[:-1]:
                raise ValidationError(f"models: {m!r}: '*' is only allowed at the end")
        return list(models) or None

    @staticmethod
    def _check_provider_config(config: Any) -> dict[str, Any]:
        if config is None:
            return {}
        if not isinstance(config, Mapping):
            raise ValidationError("config: the provider config must be a JSON object")
        if "allow_private_network" in config:
            raise ValidationError(f"config.allow_private_network: {PRIVATE_NETWORK_REFUSED}")
        problems = check_prices(config.get("prices"))
        proxy = proxy_problem(config.get(PROXY_KEY))
        if proxy is not None:
            problems.append(f"config.{PROXY_KEY}: {proxy}")
        if problems:
            raise ValidationError(problems)
        cleaned = merge_patch({}, config)
        assert isinstance(cleaned, dict)
        return cleaned

    def create_provider(
        self,
        *,
        type: str,
        name: str,
        api_key: str | None = None,
        base_url: str | None = None,
        config: Mapping[str, Any] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        rpd: int | None = None,
        priority: int = 0,
        scope: str | Scope | None = None,
        models: Sequence[str] | None = None,
    ) -> ModelProvider:
        if type not in PROVIDER_TYPES:
            raise ValidationError(
                f"type: {type!r} is not a provider type; use one of {', '.join(PROVIDER_TYPES)}"
            )
        name = _name(name, "provider")
        resolved = self.resolve_scope(scope)
        url = self._check_base_url(base_url, type)
        for field, value in (("rpm", rpm), ("tpm", tpm), ("rpd", rpd)):
            _positive(field, value)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValidationError("priority: must be an integer (lower is tried first)")
        checked_models = self._check_models(models)
        checked_config = self._check_provider_config(config)
        _check_adapter(type, name, api_key, url, checked_config, checked_models, self.outbound)
        provider_id = new_id("mp")
        credential = hint = None
        if api_key:
            credential = self.box.encrypt(api_key, provider_id)
            hint = mask_secret(api_key)
        ts = format_time(now())
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO model_providers (id, organization_id, scope_type, scope_id, "
                    "name, type, base_url, credential, credential_hint, models, priority, "
                    "config, rpm, tpm, rpd, revision, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        provider_id,
                        resolved.organization_id,
                        resolved.type,
                        resolved.id,
                        name,
                        type,
                        url,
                        credential,
                        hint,
                        None if checked_models is None else dumps(checked_models),
                        priority,
                        dumps(checked_config),
                        rpm,
                        tpm,
                        rpd,
                        1,
                        ts,
                        ts,
                    ),
                )
                self._event(tx, "provider_updated", provider_id=provider_id)
        except IntegrityError:
            raise Conflict(
                f"organization {resolved.organization_id} already has a provider named {name!r}"
            ) from None
        return self.get_provider(provider_id)

    def get_provider(self, provider_id: str) -> ModelProvider:
        rows = self.db.query("SELECT * FROM model_providers WHERE id = ?", (provider_id,))
        if not rows:
            raise NotFound(
                f"no model provider {provider_id!r}; `tollway model-providers list` shows them"
            )
        return ModelProvider.from_row(rows[0])

    def list_providers(self, organization_id: str | None = None) -> list[ModelProvider]:
        if organization_id:
            rows = self.db.query(
                "SELECT * FROM model_providers WHERE organization_id = ? "
                "ORDER BY priority, created_at, id",
                (organization_id,),
            )
        else:
            rows = self.db.query("SELECT * FROM model_providers ORDER BY priority, created_at, id")
        return _records(rows, ModelProvider.from_row)

    def update_provider(
        self,
        provider_id: str,
        *,
        name: str | Unset = UNSET,
        api_key: str | Unset | None = UNSET,
        base_url: str | Unset | None = UNSET,
        config: Mapping[str, Any] | Unset | None = UNSET,
        rpm: int | Unset | None = UNSET,
        tpm: int | Unset | None = UNSET,
        rpd: int | Unset | None = UNSET,
        priority: int | Unset = UNSET,
        models: Sequence[str] | Unset | None = UNSET,
    ) -> ModelProvider:
        """Change a provider. ``config`` is a JSON merge patch (``None`` clears it); ``None``
        for rpm/tpm/rpd removes that limit; ``api_key=None`` removes the credential."""
        current = self.get_provider(provider_id)
        sets: dict[str, Any] = {}
        if not isinstance(name, Unset):
            sets["name"] = _name(name, "provider")
        if not isinstance(api_key, Unset):
            sets["credential"] = self.box.encrypt(api_key, provider_id) if api_key else None
            sets["credential_hint"] = mask_secret(api_key) if api_key else None
        if not isinstance(base_url, Unset):
            sets["base_url"] = self._check_base_url(base_url, current.type)
        if not isinstance(config, Unset):
            merged = {} if config is None else merge_patch(current.config, config)
            sets["config"] = dumps(self._check_provider_config(merged))
        for field, value in (("rpm", rpm), ("tpm", tpm), ("rpd", rpd)):
            if not isinstance(value, Unset):
                _positive(field, value)
                sets[field] = value
        if not isinstance(priority, Unset):
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise ValidationError("priority: must be an integer (lower is tried first)")
            sets["priority"] = priority
        if not isinstance(models, Unset):
            checked = self._check_models(models)
            sets["models"] = None if checked is None else dumps(checked)
        _check_adapter(
            current.type,
            sets.get("name", current.name),
            self.provider_credential(provider_id) if isinstance(api_key, Unset) else api_key,
            sets.get("base_url", current.base_url),
            loads(sets["config"]) if "config" in sets else current.config,
            current.models if isinstance(models, Unset) else checked,
            self.outbound,
        )
        sets["updated_at"] = format_time(now())
        assignments = ", ".join(f"{k} = ?" for k in sets)
        try:
            with self.db.transaction() as tx:
                changed = tx.execute(
                    f"UPDATE model_providers SET {assignments}, revision = revision + 1 "
                    "WHERE id = ?",
                    (*sets.values(), provider_id),
                )
                if not changed:
                    raise NotFound(f"no model provider {provider_id!r}")
                self._event(tx, "provider_updated", provider_id=provider_id)
        except IntegrityError:
            raise Conflict(f"another provider of this organization is named {name!r}") from None
        return self.get_provider(provider_id)

    def delete_provider(self, provider_id: str) -> None:
        with self.db.transaction() as tx:
            if not tx.query("SELECT id FROM model_providers WHERE id = ?", (provider_id,)):
                raise NotFound(f"no model provider {provider_id!r}")
            users = tx.query(
                "SELECT DISTINCT policy_id FROM routing_policy_entries WHERE provider_id = ?",
                (provider_id,),
            )
            if users:
                ids = ", ".join(sorted(r["policy_id"] for r in users))
                raise Conflict(
                    f"provider {provider_id} is in routing policy {ids}; remove it from the "
                    "policy (or delete the policy) first"
                )
            tx.execute("DELETE FROM model_providers WHERE id = ?", (provider_id,))
            self._event(tx, "provider_updated", provider_id=provider_id)

    def provider_credential(self, provider_id: str) -> str | None:
        """The decrypted credential (for the config bundle only; never log it)."""
        rows = self.db.query("SELECT credential FROM model_providers WHERE id = ?", (provider_id,))
        if not rows:
            raise NotFound(f"no model provider {provider_id!r}")
        stored = rows[0]["credential"]
        return None if stored is None else self.box.decrypt(stored, provider_id)

    def _visible_providers(self, scope: Scope) -> list[ModelProvider]:
        """Providers a key scoped to ``scope`` inherits, by priority then age."""
        rows = self.db.query(
            "SELECT * FROM model_providers WHERE organization_id = ? AND ("
            "scope_type = 'organization' OR (scope_type = 'team' AND scope_id = ?) "
            "OR (scope_type = 'project' AND scope_id = ?)) ORDER BY priority, created_at, id",
            (scope.organization_id, scope.team_id or "", scope.project_id or ""),
        )
        return [ModelProvider.from_row(r) for r in rows]

    def key_routing_policy(self, key: VirtualKey) -> RoutingPolicy | None:
        """The routing policy that orders a key's providers: its own, else its organization's
        default, else None (the key inherits every visible provider)."""
        if key.routing_policy_id:
            return self.get_routing_policy(key.routing_policy_id)
        return self.default_routing_policy(key.organization_id)

    def provider_chain(self, key: VirtualKey) -> list[tuple[ModelProvider, str | None]]:
        """A key's providers in dispatch order, each with its pinned model (or None).

        The key's routing policy, else its organization's default policy — filtered to the
        providers visible from the key's scope — else every visible provider by priority (lower
        first), then creation time (older first).
        """
        visible = self._visible_providers(key.scope)
        policy = self.key_routing_policy(key)
        if policy is None:
            return [(p, None) for p in visible]
        by_id = {p.id: p for p in visible}
        return [(by_id[e.provider_id], e.model) for e in policy.entries if e.provider_id in by_id]

    # --- routing policies ---------------------------------------------------------------

    @staticmethod
    def parse_entries(spec: str | Sequence[Any]) -> list[PolicyEntry]:
        """``"mp_a,mp_b:claude-sonnet-4-5"`` (or a list of ids / entries / dicts) → entries."""
        items: Sequence[Any]
        items = [s for s in spec.split(",")] if isinstance(spec, str) else spec
        entries: list[PolicyEntry] = []
        for i, item in enumerate(items):
            if isinstance(item, PolicyEntry):
                entries.append(item)
                continue
            if isinstance(item, Mapping):
                pid, model = item.get("provider_id"), item.get("model")
            elif isinstance(item, str):
                pid, _, model = item.strip().partition(":")
            else:
                raise ValidationError(f"providers[{i}]: must be 'ID' or 'ID:model'")
            if not isinstance(pid, str) or not pid.strip():
                raise ValidationError(f"providers[{i}]: empty provider id")
            if model is not None and not isinstance(model, str):
                raise ValidationError(f"providers[{i}].model: must be a string")
            entries.append(PolicyEntry(pid.strip(), (model or "").strip() or None))
        if not entries:
            raise ValidationError("providers: list at least one provider id")
        return entries

    def _check_entries(self, entries: Sequence[PolicyEntry], organization_id: str) -> None:
        for i, entry in enumerate(entries):
            try:
                provider = self.get_provider(entry.provider_id)
            except NotFound as exc:
                raise ValidationError(f"providers[{i}]: {exc.message}") from None
            if provider.organization_id != organization_id:
                raise ValidationError(
                    f"providers[{i}]: {entry.provider_id} belongs to organization "
                    f"{provider.organization_id}, not {organization_id}"
                )

    def create_routing_policy(
        self,
        *,
        name: str,
        providers: str | Sequence[Any],
        is_default: bool = False,
        organization_id: str = DEFAULT_ORGANIZATION,
    ) -> RoutingPolicy:
        name = _name(name, "routing policy")
        entries = self.parse_entries(providers)
        self.get_organization(organization_id)
        self._check_entries(entries, organization_id)
        policy_id = new_id("rp")
        ts = format_time(now())
        try:
            with self.db.transaction() as tx:
                if is_default:
                    tx.execute(
                        "UPDATE routing_policies SET is_default = 0, updated_at = ? "
                        "WHERE organization_id = ? AND is_default = 1",
                        (ts, organization_id),
                    )
                tx.execute(
                    "INSERT INTO routing_policies (id, organization_id, name, is_default, "
                    "revision, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    (policy_id, organization_id, name, int(is_default), 1, ts, ts),
                )
                self._write_entries(tx, policy_id, entries)
                self._event(tx, "policy_changed")
        except IntegrityError:
            raise Conflict(
                f"organization {organization_id} already has a routing policy named {name!r}"
            ) from None
        return self.get_routing_policy(policy_id)

    @staticmethod
    def _write_entries(tx: Transaction, policy_id: str, entries: Sequence[PolicyEntry]) -> None:
        tx.execute("DELETE FROM routing_policy_entries WHERE policy_id = ?", (policy_id,))
        for position, entry in enumerate(entries):
            tx.execute(
                "INSERT INTO routing_policy_entries (policy_id, position, provider_id, model) "
                "VALUES (?,?,?,?)",
                (policy_id, position, entry.provider_id, entry.model),
            )

    def _policy_from_row(self, row: Mapping[str, Any]) -> RoutingPolicy:
        entries = self.db.query(
            "SELECT provider_id, model FROM routing_policy_entries WHERE policy_id = ? "
            "ORDER BY position",
            (row["id"],),
        )
        return RoutingPolicy(
            id=row["id"],
            organization_id=row["organization_id"],
            name=row["name"],
            is_default=bool(row["is_default"]),
            entries=tuple(PolicyEntry(e["provider_id"], e["model"]) for e in entries),
            revision=int(row["revision"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def get_routing_policy(self, policy_id: str) -> RoutingPolicy:
        rows = self.db.query("SELECT * FROM routing_policies WHERE id = ?", (policy_id,))
        if not rows:
            raise NotFound(
                f"no routing policy {policy_id!r}; `tollway routing-policies list` shows them"
            )
        return self._policy_from_row(rows[0])

    def default_routing_policy(self, organization_id: str) -> RoutingPolicy | None:
        rows = self.db.query(
            "SELECT * FROM routing_policies WHERE organization_id = ? AND is_default = 1",
            (organization_id,),
        )
        return self._policy_from_row(rows[0]) if rows else None

    def list_routing_policies(self) -> list[RoutingPolicy]:
        rows = self.db.query("SELECT * FROM routing_policies ORDER BY created_at, id")
        return _records(rows, self._policy_from_row)

    def update_routing_policy(
        self,
        policy_id: str,
        *,
        name: str | Unset = UNSET,
        providers: str | Sequence[Any] | Unset = UNSET,
        is_default: bool | Unset = UNSET,
    ) -> RoutingPolicy:
        current = self.get_routing_policy(policy_id)
        entries = None
        if not isinstance(providers, Unset):
            entries = self.parse_entries(providers)
            self._check_entries(entries, current.organization_id)
            users = self.db.query(
                "SELECT id, scope_type, organization_id, team_id, project_id FROM virtual_keys "
                "WHERE routing_policy_id = ?",
                (policy_id,),
            )
            for u in users:
                scope = Scope(u["scope_type"], u["organization_id"], u["team_id"], u["project_id"])
                visible = {p.id for p in self._visible_providers(scope)}
                hidden = [e.provider_id for e in entries if e.provider_id not in visible]
                if hidden:
                    raise ValidationError(
                        f"providers: key {u['id']} ({scope.label}) uses this policy and cannot "
                        f"see {', '.join(dict.fromkeys(hidden))}"
                    )
        ts = format_time(now())
        try:
            with self.db.transaction() as tx:
                sets: dict[str, Any] = {"updated_at": ts}
                if not isinstance(name, Unset):
                    sets["name"] = _name(name, "routing policy")
                if not isinstance(is_default, Unset):
                    if is_default:
                        tx.execute(
                            "UPDATE routing_policies SET is_default = 0, updated_at = ? "
                            "WHERE organization_id = ? AND is_default = 1",
                            (ts, current.organization_id),
                        )
                    sets["is_default"] = int(bool(is_default))
                assignments = ", ".join(f"{k} = ?" for k in sets)
                if not tx.execute(
                    f"UPDATE routing_policies SET {assignments}, revision = revision + 1 "
                    "WHERE id = ?",
                    (*sets.values(), policy_id),
                ):
                    raise NotFound(f"no routing policy {policy_id!r}")
                if entries is not None:
                    self._write_entries(tx, policy_id, entries)
                self._event(tx, "policy_changed")
        except IntegrityError:
            raise Conflict(f"another routing policy is named {name!r}") from None
        return self.get_routing_policy(policy_id)

    def delete_routing_policy(self, policy_id: str) -> None:
        with self.db.transaction() as tx:
            if not tx.query("SELECT id FROM routing_policies WHERE id = ?", (policy_id,)):
                raise NotFound(f"no routing policy {policy_id!r}")
            users = tx.query(
                "SELECT id FROM virtual_keys WHERE routing_policy_id = ? ORDER BY id", (policy_id,)
            )
            if users:
                ids = ", ".join(r["id"] for r in users[:5]) + (" …" if len(users) > 5 else "")
                raise Conflict(
                    f"routing policy {policy_id} is used by key(s) {ids}; point them at another "
                    "policy (tollway virtual-keys update ID --routing-policy …) first"
                )
            tx.execute("DELETE FROM routing_policy_entries WHERE policy_id = ?", (policy_id,))
            tx.execute("DELETE FROM routing_policies WHERE id = ?", (policy_id,))
            self._event(tx, "policy_changed")

    # --- the config bundle ----------------------------------------------------------------

    def bundle(self, key_id: str) -> dict[str, Any]:
        """The config bundle a gateway caches for a key (decrypted credentials included)."""
        key = self.get_key(key_id)
        policy = self.key_routing_policy(key)
        providers = []
        for provider, model in self.provider_chain(key):
            providers.append(
                {
                    "id": provider.id,
                    "name": provider.name,
                    "type": provider.type,
                    "base_url": provider.base_url,
                    "api_key": self.provider_credential(provider.id),
                    "models": provider.models,
                    "priority": provider.priority,
                    "config": provider.config,
                    "revision": provider.revision,
                    "rpm": provider.rpm,
                    "tpm": provider.tpm,
                    "rpd": provider.rpd,
                    "model": model,
                }
            )
        return {
            "vk_id": key.id,
            "revision": key.revision,
            "name": key.name,
            "display_prefix": key.display_prefix,
            "status": key.effective_status(),
            "expires_at": key.expires_at,
            "organization_id": key.organization_id,
            "team_id": key.team_id,
            "project_id": key.project_id,
            "principal_id": key.principal_id,
            "config": key.config,
            # Set when a routing policy ordered "providers": the gateway then routes to exactly
            # them; null: it adds its own config-file providers after them.
            "routing_policy_id": policy.id if policy is not None else None,
            "providers": providers,
            "budgets": [b.to_bundle() for b in self.key_budgets(key)],
            "extras": {"otel_auth_token": _ingest_token(self, key)},
        }

    # --- budgets ------------------------------------------------------------------------

    def create_budget(
        self,
        *,
        scope: str | Scope,
        window: str,
        limit_usd: int,
        on_breach: str = "block",
        name: str | None = None,
        organization_id: str | None = None,
    ) -> Budget:
        """Create a budget; ``limit_usd`` is micro-USD (see :func:`parse_usd`).

        ``scope`` is ``organization|team|project[:ID]``, ``virtual_key:ID``, ``principal:ID``
        or ``end_user:ID`` — ``end_user:*`` caps *each* end user of the organization
        separately. ``organization_id`` places principal and end-user budgets (default: the
        default organization); for the other scopes it must match the scope's own.
        """
        if organization_id is not None:
            organization_id = self.resolve_scope_id(
                "organization", organization_id, "organization_id"
            )
        resolved = self.resolve_scope(scope, BUDGET_SCOPES, organization_id)
        if organization_id is not None and resolved.organization_id != organization_id:
            raise ValidationError(
                f"organization_id: {resolved.label} belongs to organization "
                f"{resolved.organization_id}, not {organization_id}"
            )
        if window not in BUDGET_WINDOWS:
            raise ValidationError(f"window: must be one of {', '.join(BUDGET_WINDOWS)}")
        if on_breach not in ON_BREACH:
            raise ValidationError(f"on_breach: must be one of {', '.join(ON_BREACH)}")
        if not _micro_usd(limit_usd):
            raise ValidationError("limit: must be a non-negative amount (micro-USD, 64-bit)")
        budget_id = new_id("bud")
        ts = format_time(now())
        with self.db.transaction() as tx:
            tx.execute(
                'INSERT INTO budgets (id, organization_id, scope_type, scope_id, name, "window", '
                "limit_usd, on_breach, reset_at, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    budget_id,
                    resolved.organization_id,
                    resolved.type,
                    resolved.id,
                    name,
                    window,
                    limit_usd,
                    on_breach,
                    None,
                    ts,
                    ts,
                ),
            )
            self._event(tx, "budget_changed")
        return self.get_budget(budget_id)

    def get_budget(self, budget_id: str) -> Budget:
        rows = self.db.query("SELECT * FROM budgets WHERE id = ?", (budget_id,))
        if not rows:
            raise NotFound(f"no budget {budget_id!r}; `tollway gateway-budgets list` shows them")
        return Budget.from_row(rows[0])

    def list_budgets(self) -> list[Budget]:
        rows = self.db.query("SELECT * FROM budgets ORDER BY created_at, id")
        return _records(rows, Budget.from_row)

    def update_budget(
        self,
        budget_id: str,
        *,
        limit_usd: int | Unset = UNSET,
        on_breach: str | Unset = UNSET,
        name: str | Unset | None = UNSET,
    ) -> Budget:
        sets: dict[str, Any] = {"updated_at": format_time(now())}
        if not isinstance(limit_usd, Unset):
            if not _micro_usd(limit_usd):
                raise ValidationError("limit: must be a non-negative amount (micro-USD, 64-bit)")
            sets["limit_usd"] = limit_usd
        if not isinstance(on_breach, Unset):
            if on_breach not in ON_BREACH:
                raise ValidationError(f"on_breach: must be one of {', '.join(ON_BREACH)}")
            sets["on_breach"] = on_breach
        if not isinstance(name, Unset):
            sets["name"] = name
        return self._write_budget(budget_id, sets)

    def reset_budget(self, budget_id: str) -> Budget:
        """Start counting the budget's spend afresh from now."""
        ts = format_time(now())
        return self._write_budget(budget_id, {"reset_at": ts, "updated_at": ts})

    def _write_budget(self, budget_id: str, sets: Mapping[str, Any]) -> Budget:
        assignments = ", ".join(f"{k} = ?" for k in sets)
        with self.db.transaction() as tx:
            if not tx.execute(
                f"UPDATE budgets SET {assignments} WHERE id = ?", (*sets.values(), budget_id)
            ):
                raise NotFound(f"no budget {budget_id!r}")
            self._event(tx, "budget_changed")
        return self.get_budget(budget_id)

    def delete_budget(self, budget_id: str) -> None:
        with self.db.transaction() as tx:
            if not tx.execute("DELETE FROM budgets WHERE id = ?", (budget_id,)):
                raise NotFound(f"no budget {budget_id!r}")
            self._event(tx, "budget_changed")

    def ledger_has_rows(self) -> bool:
        return bool(self.db.query("SELECT request_id FROM ledger LIMIT 1"))

    def budget_spend(self, budget: Budget, at: datetime | None = None) -> int:
        """Micro-USD spent in the budget's current window (since its last reset).

        A per-end-user budget (``end_user:*``) reports its biggest spender's spend (the one
        closest to the cap); :meth:`budget_top_end_user` says who that is.
        """
        return self._budget_spend(budget, at)[0]

    def budget_top_end_user(self, budget: Budget, at: datetime | None = None) -> str | None:
        """For ``end_user:*`` budgets: the end user who spent most in the current window."""
        return self._budget_spend(budget, at)[1]

    def _budget_spend(self, budget: Budget, at: datetime | None) -> tuple[int, str | None]:
        since = self._window_since(budget, at)
        if budget.scope_type == "end_user" and budget.scope_id == PER_END_USER:
            rows = self.db.query(
                "SELECT end_user_id, SUM(cost_usd) AS s FROM ledger WHERE organization_id = ? "
                "AND end_user_id IS NOT NULL AND created_at >= ? GROUP BY end_user_id "
                "ORDER BY s DESC, end_user_id LIMIT 1",
                (budget.organization_id, since),
            )
            if not rows:
                return 0, None
            return int(rows[0]["s"] or 0), rows[0]["end_user_id"]
        spend = self.ledger_spend(
            [
                {
                    "organization_id": budget.organization_id,
                    "scope_type": budget.scope_type,
                    "scope_id": budget.scope_id,
                    "since": since,
                }
            ]
        )
        return spend[0], None

    def budget_usage(
        self, budget: Budget, end_user: str | None = None, at: datetime | None = None
    ) -> dict[str, int]:
        """What the budget's current window holds in the ledger: ``requests`` and the token
        sums (``input_tokens`` excludes cache reads, as the ledger stores them). For an
        ``end_user:*`` budget, ``end_user`` picks whose (the top spender's, normally)."""
        since = self._window_since(budget, at)
        if budget.scope_type == "end_user" and budget.scope_id == PER_END_USER:
            where, params = (
                "end_user_id = ? AND organization_id = ?",
                [
                    end_user,
                    budget.organization_id,
                ],
            )
        else:
            where, params = f"{_LEDGER_COLUMN[budget.scope_type]} = ?", [budget.scope_id]
            if budget.scope_type in ("principal", "end_user"):
                where += " AND organization_id = ?"
                params.append(budget.organization_id)
        rows = self.db.query(
            "SELECT COUNT(*) AS requests, SUM(input_tokens) AS input_tokens, "
            "SUM(output_tokens) AS output_tokens, "
            "SUM(cache_read_input_tokens) AS cache_read_input_tokens, "
            "SUM(cache_creation_input_tokens) AS cache_creation_input_tokens, "
            "SUM(reasoning_tokens) AS reasoning_tokens "
            f"FROM ledger WHERE {where} AND created_at >= ?",
            [*params, since],
        )
        row = rows[0] if rows else {}
        return {name: int(row.get(name) or 0) for name in USAGE_SUMS}

    def _window_since(self, budget: Budget, at: datetime | None) -> str:
        start = window_start(budget.window, at or now())
        since = format_time(start) if start is not None else ""
        if budget.reset_at and budget.reset_at > since:
            since = budget.reset_at
        return since

    def key_budgets(self, key: VirtualKey) -> list[Budget]:
        """The budgets that apply to ``key``'s requests: those of its organization, team,
        project, itself and its principal, plus every end-user budget of its organization (a
        gateway applies those per request, by the request's end user)."""
        own = {
            "organization": key.organization_id,
            "team": key.team_id,
            "project": key.project_id,
            "virtual_key": key.id,
            "principal": key.principal_id,
        }
        rows = self.db.query(
            "SELECT * FROM budgets WHERE organization_id = ? ORDER BY created_at, id",
            (key.organization_id,),
        )
        out = []
        for row in rows:
            budget = Budget.from_row(row)
            if budget.scope_type == "end_user" or (
                own.get(budget.scope_type) is not None and own[budget.scope_type] == budget.scope_id
            ):
                out.append(budget)
        return out

    # --- the spend ledger -----------------------------------------------------------------

    def record_ledger(self, entries: Sequence[Mapping[str, Any]]) -> int:
        """Insert gateway ledger entries (checked by :func:`check_ledger_entry`), each once:
        an entry whose ``request_id`` is already recorded is skipped (a retried outbox batch
        never debits twice). Returns how many rows were new."""
        inserted = 0
        with self.db.transaction() as tx:
            for e in entries:
                inserted += tx.execute(
                    "INSERT INTO ledger (request_id, created_at, organization_id, team_id, "
                    "project_id, vk_id, principal_id, end_user_id, provider_id, model, "
                    "input_tokens, output_tokens, cache_read_input_tokens, "
                    "cache_creation_input_tokens, reasoning_tokens, cost_usd, status, "
                    "usage_estimated, gateway_node_id) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (request_id) DO NOTHING",
                    tuple(e.get(column) for column in LEDGER_COLUMNS),
                )
        return inserted

    def ledger_spend(self, queries: Sequence[Mapping[str, Any]]) -> list[int]:
        """Micro-USD in the ledger per query ``{organization_id, scope_type, scope_id, since,
        until?}`` (``since``/``until``: ISO-8601 UTC as the ledger writes them; ``until``
        exclusive). Principal and end-user ids are free-form, so they count only within the
        query's organization."""
        out = []
        for q in queries:
            scope_type = q["scope_type"]
            column = _LEDGER_COLUMN[scope_type]
            sql = f"SELECT SUM(cost_usd) AS s FROM ledger WHERE {column} = ? AND created_at >= ?"
            params: list[Any] = [q["scope_id"], q.get("since") or ""]
            if q.get("until"):
                sql += " AND created_at < ?"
                params.append(q["until"])
            if scope_type in ("principal", "end_user"):
                sql += " AND organization_id = ?"
                params.append(q["organization_id"])
            rows = self.db.query(sql, params)
            out.append(int(rows[0]["s"] or 0))
        return out


def _check_adapter(
    type_: str,
    name: str,
    api_key: str | None,
    base_url: str | None,
    config: Mapping[str, Any],
    models: Sequence[str] | None,
    outbound: OutboundPolicy | None = None,
) -> None:
    """Refuse what the installed adapter of ``type_`` would refuse at a gateway's start-up (a
    missing region, an empty deployment map, a token endpoint the SSRF guard refuses, …).
    Where no adapter of that type is installed, only the store's own checks apply."""
    from tollway.config import ProviderConfig
    from tollway.provider import adapter_problems

    problems = adapter_problems(
        ProviderConfig(
            name=name,
            type=type_,
            base_url=base_url,
            api_key=api_key,
            models=None if models is None else list(models),
            config=dict(config),
        ),
        outbound,
        STORED_PROVIDER_HINT,
    )
    if problems:
        raise ValidationError(f"the {type_} adapter refuses this provider: " + "; ".join(problems))


def window_start(window: str, at: datetime) -> datetime | None:
    """The start of the UTC calendar window containing ``at`` (None for ``total``)."""
    if window == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return day
    if window == "week":
        return day - timedelta(days=day.weekday())
    if window == "month":
        return day.replace(day=1)
    return None


def _no_key(key_id: str) -> str:
    return f"no virtual key {key_id!r}; `tollway virtual-keys list` shows the keys"


def _revoked(key_id: str) -> str:
    return f"virtual key {key_id} is revoked"


def _ingest_token(store: Store, key: VirtualKey) -> str:
    """The per-project OTLP ingest token a key's bundle carries (see :mod:`.ingest`)."""
    from tollway_control_plane.ingest import bundle_token

    return bundle_token(store, key)
