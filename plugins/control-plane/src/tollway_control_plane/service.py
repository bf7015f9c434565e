"""Control-plane operations on JSON: what the CLI, the admin REST API and the CLI's remote mode
share.

Each operation takes an id and/or a JSON body (a dict, as it arrives over HTTP) and returns
JSON. :data:`OPERATIONS` is the table of them; :class:`Service` runs them on a local
:class:`~tollway_control_plane.store.Store`; :class:`tollway_control_plane.client.RemoteService`
runs the same table over the admin API. Ids and bodies are checked here, field by field, before
the store is touched (:mod:`tollway_control_plane.validation`: types, lengths, ranges); what
depends on the stored state (a scope that exists, a provider the key can see) is checked by
the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from tollway.config import ProviderConfig
from tollway_control_plane._crypto import mask_secret
from tollway_control_plane._db import IntegrityError
from tollway_control_plane._util import UNSET, Unset
from tollway_control_plane.access import Access
from tollway_control_plane.auth import SUPERUSER, Principal
from tollway_control_plane.store import (
    PER_END_USER,
    PRIVATE_NETWORK_REFUSED,
    USAGE_SUMS,
    Budget,
    Conflict,
    NotFound,
    Store,
    ValidationError,
    format_usd,
    parse_usd,
)
from tollway_control_plane.validation import check_body, check_path_id

__all__ = ["OPERATIONS", "Operation", "Service"]

log = logging.getLogger("tollway_control_plane")


@attrs.frozen
class Operation:
    """One admin operation: ``name`` (``keys.create``), HTTP ``method`` and ``path`` under
    ``/api/admin`` (``{id}`` where it takes an id), and whether it takes a body."""

    name: str
    method: str
    path: str
    body: bool = False
    status: int = 200
    summary: str = ""

    @property
    def has_id(self) -> bool:
        return "{id}" in self.path


def _ops(resource: str, path: str, *, rotate: bool = False) -> list[Operation]:
    return [
        Operation(f"{resource}.create", "POST", path, True, 201, f"Create a {resource[:-1]}"),
        Operation(f"{resource}.list", "GET", path, summary=f"List {resource}"),
        Operation(f"{resource}.get", "GET", f"{path}/{{id}}", summary=f"Get one {resource[:-1]}"),
        Operation(f"{resource}.update", "PATCH", f"{path}/{{id}}", True, summary="Change fields"),
        Operation(f"{resource}.delete", "DELETE", f"{path}/{{id}}", summary="Delete"),
    ]


OPERATIONS: list[Operation] = [
    *_ops("keys", "/virtual-keys"),
    Operation("keys.rotate", "POST", "/virtual-keys/{id}/rotate", summary="New secret (24 h)"),
    Operation("keys.revoke", "POST", "/virtual-keys/{id}/revoke", summary="Revoke, for good"),
    Operation("keys.disable", "POST", "/virtual-keys/{id}/disable", summary="Disable"),
    Operation("keys.enable", "POST", "/virtual-keys/{id}/enable", summary="Enable again"),
    *_ops("providers", "/model-providers"),
    *_ops("policies", "/routing-policies"),
    *_ops("budgets", "/budgets"),
    Operation("budgets.reset", "POST", "/budgets/{id}/reset", summary="Count spend afresh"),
    Operation("scopes.list", "GET", "/scopes", summary="Organizations, teams and projects"),
    Operation("scopes.create", "POST", "/scopes", True, 201, summary="Create a team or project"),
    Operation("store.info", "GET", "/store", summary="The store's id and kind (no secrets)"),
    Operation("api_tokens.create", "POST", "/api-tokens", True, 201, "Create an API token"),
    Operation("api_tokens.list", "GET", "/api-tokens", summary="List API tokens (no secrets)"),
    Operation("api_tokens.get", "GET", "/api-tokens/{id}", summary="Get one API token"),
    Operation("api_tokens.revoke", "POST", "/api-tokens/{id}/revoke", summary="Revoke, for good"),
]
_BY_NAME = {op.name: op for op in OPERATIONS}
_RESOURCE = {
    "keys": "virtual key",
    "providers": "model provider",
    "policies": "routing policy",
    "budgets": "budget",
    "scopes": "scope",
    "api_tokens": "API token",
}


def operation(name: str) -> Operation:
    return _BY_NAME[name]


def _config_provider_json(p: ProviderConfig) -> dict[str, Any]:
    """A config-file provider as ``providers.list`` shows it (read-only; its ``config`` table is
    left out, it may hold credentials)."""
    return {
        "id": p.key,
        "name": p.name,
        "type": p.type,
        "scope": "config",
        "source": "config",
        "read_only": True,
        "base_url": p.base_url,
        "api_key": mask_secret(p.api_key) if p.api_key else None,
        "models": p.models,
        "priority": p.priority,
        "rpm": p.rpm,
        "tpm": p.tpm,
        "rpd": p.rpd,
    }


# --- body field helpers ---------------------------------------------------------------------


def _body(body: Any) -> Mapping[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise ValidationError("body: must be a JSON object")
    return body


def _check_fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    if "allow_private_network" in body and "allow_private_network" not in allowed:
        raise ValidationError(f"allow_private_network: {PRIVATE_NETWORK_REFUSED}")
    unknown = [k for k in body if k not in allowed]
    if unknown:
        raise ValidationError(
            [f"{k}: unknown field (known: {', '.join(allowed)})" for k in unknown]
        )


def _get(
    body: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = False,
    nullable: bool = True,
) -> Any:
    """``body[name]`` checked against ``kind``; :data:`UNSET` when absent."""
    if name not in body:
        if required:
            raise ValidationError(f"{name}: required")
        return UNSET
    value = body[name]
    if value is None:
        if not nullable:
            raise ValidationError(f"{name}: must not be null")
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ValidationError(f"{name}: must be {_kind_name(kinds)}, not a boolean")
    if not isinstance(value, kinds):
        raise ValidationError(f"{name}: must be {_kind_name(kinds)}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}
    names.update({list: "an array", float: "a number"})
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _or(value: Any, default: Any) -> Any:
    return default if isinstance(value, Unset) else value


T = TypeVar("T")


def _each(items: Iterable[T], render: Callable[[T], dict[str, Any]]) -> list[dict[str, Any]]:
    """``render`` each listed item; one that cannot be rendered is left out with a logged
    warning (a listing never dies on one bad row)."""
    out = []
    for item in items:
        try:
            out.append(render(item))
        except Exception as exc:
            log.warning(
                "left %s out of a listing: %s: %s",
                getattr(item, "id", "?"),
                type(exc).__name__,
                exc,
            )
    return out


def _models(value: Any) -> Any:
    if isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()] or None
    return value


# --- the service ----------------------------------------------------------------------------


class Service:
    """Runs :data:`OPERATIONS` on a local store.

    ``config_providers`` are the config file's ``[[providers]]`` (when this process knows the
    file): ``providers.list`` shows them after the store's, read-only, with ``source: config``.
    """

    def __init__(self, store: Store, config_providers: Sequence[ProviderConfig] = ()) -> None:
        self.store = store
        self.config_providers = tuple(config_providers)

    def close(self) -> None:
        self.store.close()

    def call(
        self,
        name: str,
        id: str | None = None,
        body: Any = None,
        *,
        principal: Principal = SUPERUSER,
    ) -> Any:
        """Run operation ``name`` (``keys.create``…) with its id and JSON body, as ``principal``
        (the CLI on a local store is the super-user; the admin API and the console pass the
        caller's token); :class:`~tollway_control_plane.auth.Forbidden` when it may not. A
        token scoped below the installation works only in its scope's subtree
        (:mod:`tollway_control_plane.access`: this is the one place that checks it)."""
        op = _BY_NAME[name]
        principal.require(name)
        access = None if principal.superuser else Access(self, principal)
        method = getattr(self, name.replace(".", "_"))
        args: list[Any] = []
        if op.has_id:
            if not check_path_id(id):
                raise NotFound(
                    f"no {_RESOURCE[name.split('.')[0]]} {str(id)[:64]!r}: an id is 1 to 128 "
                    "letters, digits and _ - . : @"
                )
            args.append(id)
            if access is not None:
                access.check_target(name, str(id))
        if op.body:
            check_body(name, body)
            checked = _body(body)
            if access is not None and name.endswith(".create"):
                checked = access.check_create(name, checked)
                if name == "api_tokens.create":
                    checked = {**checked, "created_by": principal.name}
            args.append(checked)
        try:
            result = method(*args)
            return access.filter(name, result) if access and name.endswith(".list") else result
        except IntegrityError as exc:  # a concurrent write removed what this one refers to
            raise Conflict(
                f"the change conflicts with another one made at the same time ({exc}); retry"
            ) from None

    # --- keys ---------------------------------------------------------------------------

    _KEY_CREATE = (
        "name",
        "scope",
        "env",
        "config",
        "routing_policy_id",
        "expires_at",
        "principal_id",
    )

    def keys_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(body, self._KEY_CREATE)
        key, secret = self.store.create_key(
            name=_get(body, "name", str, required=True, nullable=False),
            scope=_or(_get(body, "scope", str), None),
            env=_or(_get(body, "env", str, nullable=False), "live"),
            config=_or(_get(body, "config", dict), None),
            routing_policy_id=_or(_get(body, "routing_policy_id", str), None),
            expires_at=_or(_get(body, "expires_at", str), None),
            principal_id=_or(_get(body, "principal_id", str), None),
        )
        return {**key.to_json(), "secret": secret}

    def keys_list(self) -> list[dict[str, Any]]:
        return _each(self.store.list_keys(), lambda k: k.to_json())

    def keys_get(self, key_id: str) -> dict[str, Any]:
        from tollway_control_plane.ingest import trace_project

        key = self.store.get_key(key_id)
        # Where its spans are filed (an org/team key: the organization's internal_governance).
        return {**key.to_json(), "trace_project_id": trace_project(self.store, key).id}

    def keys_update(self, key_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(body, ("name", "config", "routing_policy_id", "expires_at", "principal_id"))
        return self.store.update_key(
            key_id,
            name=_get(body, "name", str, nullable=False),
            config=_get(body, "config", dict),
            routing_policy_id=_get(body, "routing_policy_id", str),
            expires_at=_get(body, "expires_at", str),
            principal_id=_get(body, "principal_id", str),
        ).to_json()

    def keys_rotate(self, key_id: str) -> dict[str, Any]:
        key, secret = self.store.rotate_key(key_id)
        return {**key.to_json(), "secret": secret}

    def keys_revoke(self, key_id: str) -> dict[str, Any]:
        return self.store.revoke_key(key_id).to_json()

    def keys_disable(self, key_id: str) -> dict[str, Any]:
        return self.store.disable_key(key_id).to_json()

    def keys_enable(self, key_id: str) -> dict[str, Any]:
        return self.store.enable_key(key_id).to_json()

    def keys_delete(self, key_id: str) -> dict[str, Any]:
        self.store.delete_key(key_id)
        return {"id": key_id, "deleted": True}

    # --- model providers ----------------------------------------------------------------

    _PROVIDER_FIELDS = (
        "name",
        "api_key",
        "base_url",
        "config",
        "rpm",
        "tpm",
        "rpd",
        "priority",
        "models",
    )

    def providers_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(body, ("type", "scope", *self._PROVIDER_FIELDS))
        return self.store.create_provider(
            type=_get(body, "type", str, required=True, nullable=False),
            name=_get(body, "name", str, required=True, nullable=False),
            api_key=_or(_get(body, "api_key", str), None),
            base_url=_or(_get(body, "base_url", str), None),
            config=_or(_get(body, "config", dict), None),
            rpm=_or(_get(body, "rpm", int), None),
            tpm=_or(_get(body, "tpm", int), None),
            rpd=_or(_get(body, "rpd", int), None),
            priority=_or(_get(body, "priority", int, nullable=False), 0),
            scope=_or(_get(body, "scope", str), None),
            models=_or(_models(_get(body, "models", (list, str))), None),
        ).to_json()

    def providers_list(self) -> list[dict[str, Any]]:
        stored = _each(self.store.list_providers(), lambda p: {**p.to_json(), "source": "store"})
        return stored + [_config_provider_json(p) for p in self.config_providers]

    def providers_get(self, provider_id: str) -> dict[str, Any]:
        for p in self.config_providers:
            if p.key == provider_id:
                return _config_provider_json(p)
        return {**self.store.get_provider(provider_id).to_json(), "source": "store"}

    def _refuse_config_provider(self, provider_id: str) -> None:
        if any(p.key == provider_id for p in self.config_providers):
            raise ValidationError(
                f"provider {provider_id!r} comes from the config file ([[providers]]), which "
                "the control plane cannot change; edit the config file and restart the gateway"
            )

    def providers_update(self, provider_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._refuse_config_provider(provider_id)
        _check_fields(body, self._PROVIDER_FIELDS)
        return self.store.update_provider(
            provider_id,
            name=_get(body, "name", str, nullable=False),
            api_key=_get(body, "api_key", str),
            base_url=_get(body, "base_url", str),
            config=_get(body, "config", dict),
            rpm=_get(body, "rpm", int),
            tpm=_get(body, "tpm", int),
            rpd=_get(body, "rpd", int),
            priority=_get(body, "priority", int, nullable=False),
            models=_models(_get(body, "models", (list, str))),
        ).to_json()

    def providers_delete(self, provider_id: str) -> dict[str, Any]:
        self._refuse_config_provider(provider_id)
        self.store.delete_provider(provider_id)
        return {"id": provider_id, "deleted": True}

    # --- routing policies ---------------------------------------------------------------

    def policies_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(body, ("name", "providers", "strategy", "is_default", "organization_id"))
        kwargs: dict[str, Any] = {}
        org = _get(body, "organization_id", str, nullable=False)
        if not isinstance(org, Unset):
            kwargs["organization_id"] = org
        providers = _get(body, "providers", (str, list), required=True, nullable=False)
        strategy = _or(_get(body, "strategy", str, nullable=False), None)
        self._check_config_entries(providers, strategy)
        return self.store.create_routing_policy(
            name=_get(body, "name", str, required=True, nullable=False),
            providers=providers,
            strategy=strategy,
            is_default=bool(_or(_get(body, "is_default", bool, nullable=False), False)),
            **kwargs,
        ).to_json()

    def policies_list(self) -> list[dict[str, Any]]:
        return _each(self.store.list_routing_policies(), lambda p: p.to_json())

    def policies_get(self, policy_id: str) -> dict[str, Any]:
        return self.store.get_routing_policy(policy_id).to_json()

    def policies_update(self, policy_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(body, ("name", "providers", "strategy", "is_default"))
        providers = _get(body, "providers", (str, list), nullable=False)
        strategy = _get(body, "strategy", str, nullable=False)
        self._check_config_entries(providers, _or(strategy, None))
        return self.store.update_routing_policy(
            policy_id,
            name=_get(body, "name", str, nullable=False),
            providers=providers,
            is_default=_get(body, "is_default", bool, nullable=False),
            strategy=strategy,
        ).to_json()

    def _check_config_entries(self, providers: Any, strategy: str | None = None) -> None:
        """Entries naming a config-file provider must name one of this config file's."""
        if isinstance(providers, Unset):
            return
        known = {p.name for p in self.config_providers}
        for i, entry in enumerate(self.store.parse_entries(providers, strategy)):
            if entry.from_config and entry.provider_id not in known:
                listed = ", ".join(sorted(known)) or "none: give the command --config FILE"
                raise ValidationError(
                    f"providers[{i}]: {entry.provider_id!r} is neither a stored provider's id "
                    f"(mp_…) nor the name of a provider in the config file (config-file "
                    f"providers: {listed}); `tollway model-providers list` shows both"
                )

    def policies_delete(self, policy_id: str) -> dict[str, Any]:
        self.store.delete_routing_policy(policy_id)
        return {"id": policy_id, "deleted": True}

    # --- budgets ------------------------------------------------------------------------

    def _budget_json(self, budget: Budget, accounting: bool | None = None) -> dict[str, Any]:
        if accounting is None:
            accounting = self.store.ledger_has_rows()
        spent = self.store.budget_spend(budget) if accounting else 0
        data = budget.to_json()
        data["spend_micro_usd"] = spent
        data["spend_usd"] = format_usd(spent)
        data["spend_accounting"] = accounting
        top: str | None = None
        if budget.scope_type == "end_user" and budget.scope_id == PER_END_USER:
            # Each end user has their own cap: the spend shown is the biggest spender's.
            top = self.store.budget_top_end_user(budget) if accounting and spent else None
            data["spend_end_user"] = top
        # Requests and tokens behind the spend (cache reads and reasoning tokens included), so
        # an operator sees *why* a coding agent costs what it does.
        data["usage"] = (
            self.store.budget_usage(budget, end_user=top)
            if accounting
            else dict.fromkeys(USAGE_SUMS, 0)
        )
        return data

    def budgets_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(
            body, ("scope", "window", "limit_usd", "on_breach", "name", "organization_id")
        )
        scope = _get(body, "scope", str, required=True, nullable=False)
        limit = _get(body, "limit_usd", (str, int, float), required=True, nullable=False)
        budget = self.store.create_budget(
            scope=scope,
            window=_or(_get(body, "window", str, nullable=False), "month"),
            limit_usd=parse_usd(limit),
            on_breach=_or(_get(body, "on_breach", str, nullable=False), "block"),
            name=_or(_get(body, "name", str), None),
            organization_id=_or(_get(body, "organization_id", str), None),
        )
        return self._budget_json(budget)

    def budgets_list(self) -> list[dict[str, Any]]:
        accounting = self.store.ledger_has_rows()
        return _each(self.store.list_budgets(), lambda b: self._budget_json(b, accounting))

    def budgets_get(self, budget_id: str) -> dict[str, Any]:
        return self._budget_json(self.store.get_budget(budget_id))

    def budgets_update(self, budget_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(body, ("limit_usd", "on_breach", "name"))
        limit = _get(body, "limit_usd", (str, int, float), nullable=False)
        budget = self.store.update_budget(
            budget_id,
            limit_usd=limit if isinstance(limit, Unset) else parse_usd(limit),
            on_breach=_get(body, "on_breach", str, nullable=False),
            name=_get(body, "name", str),
        )
        return self._budget_json(budget)

    def budgets_delete(self, budget_id: str) -> dict[str, Any]:
        self.store.delete_budget(budget_id)
        return {"id": budget_id, "deleted": True}

    def budgets_reset(self, budget_id: str) -> dict[str, Any]:
        return self._budget_json(self.store.reset_budget(budget_id))

    # --- scopes -------------------------------------------------------------------------

    def scopes_list(self) -> dict[str, Any]:
        return {
            "organizations": [o.to_json() for o in self.store.list_organizations()],
            "teams": [t.to_json() for t in self.store.list_teams()],
            "projects": [p.to_json() for p in self.store.list_projects()],
        }

    def scopes_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(body, ("type", "name", "parent_id"))
        kind = _get(body, "type", str, required=True, nullable=False)
        name = _get(body, "name", str, required=True, nullable=False)
        parent = _or(_get(body, "parent_id", str), None)
        if kind == "organization":
            return {"type": kind, **self.store.create_organization(name).to_json()}
        if kind == "team":
            org = self.store.resolve_scope_id("organization", parent, "parent_id")
            team = self.store.create_team(name, org)
            return {"type": kind, **team.to_json()}
        if kind == "project":
            team_id = self.store.resolve_scope_id("team", parent, "parent_id")
            project = self.store.create_project(name, team_id)
            return {"type": kind, **project.to_json()}
        raise ValidationError("type: must be organization, team or project")

    # --- API tokens ---------------------------------------------------------------------

    def api_tokens_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_fields(body, ("name", "scope", "permissions", "expires_at", "created_by"))
        token, secret = self.store.create_api_token(
            name=_or(_get(body, "name", str, nullable=False), "API token"),
            scope=_get(body, "scope", str, required=True, nullable=False),
            permissions=_get(body, "permissions", (str, list), required=True, nullable=False),
            expires_at=_or(_get(body, "expires_at", str), None),
            created_by=_or(_get(body, "created_by", str), "admin token or local CLI"),
        )
        return {**token.to_json(), "secret": secret}

    def api_tokens_list(self) -> list[dict[str, Any]]:
        return _each(self.store.list_api_tokens(), lambda t: t.to_json())

    def api_tokens_get(self, token_id: str) -> dict[str, Any]:
        return self.store.get_api_token(token_id).to_json()

    def api_tokens_revoke(self, token_id: str) -> dict[str, Any]:
        return self.store.revoke_api_token(token_id).to_json()

    # --- the store ----------------------------------------------------------------------

    def store_info(self) -> dict[str, Any]:
        """The store's random id and its kind: what ``tollway status`` compares with a
        gateway's ``/readyz``."""
        return {"id": self.store.store_id, "kind": self.store.db.dialect}
