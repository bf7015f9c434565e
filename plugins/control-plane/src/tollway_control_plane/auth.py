"""Who calls the admin API and the console, and what they may do.

A caller is a :class:`Principal`: the bootstrap super-user (``TOLLWAY_ADMIN_TOKEN``) or an API
token with :data:`PERMISSIONS` at a scope. Every admin operation names the permission it needs
(:data:`OPERATION_PERMISSIONS`); :meth:`tollway_control_plane.service.Service.call` checks it for
the admin API, the console and the CLI alike, so there is one place that decides.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from tollway_control_plane._errors import StoreError, ValidationError

if TYPE_CHECKING:
    from tollway_control_plane.store import Store

__all__ = [
    "IMPLIED",
    "OPERATION_PERMISSIONS",
    "PERMISSIONS",
    "SUPERUSER",
    "TOKEN_PREFIX",
    "Forbidden",
    "Principal",
    "authenticate",
    "parse_permissions",
    "permission_for",
    "principal_by_token_id",
    "principal_for_token",
]

#: How an API token's secret starts (a virtual key's starts ``lw_vk_``).
TOKEN_PREFIX = "lw_at_"

#: Every permission an API token can hold (``resource:verb``, the reference's spelling).
PERMISSIONS: tuple[str, ...] = (
    "virtualKeys:read",
    "virtualKeys:create",
    "virtualKeys:update",
    "virtualKeys:delete",
    "modelProviders:read",
    "modelProviders:create",
    "modelProviders:update",
    "modelProviders:delete",
    "routingPolicies:read",
    "routingPolicies:create",
    "routingPolicies:update",
    "routingPolicies:delete",
    "budgets:read",
    "budgets:create",
    "budgets:update",
    "budgets:delete",
    "scopes:read",
    "scopes:create",
    "requests:read",
    "apiTokens:manage",
)

_RESOURCES = {
    "keys": "virtualKeys",
    "providers": "modelProviders",
    "policies": "routingPolicies",
    "budgets": "budgets",
    "scopes": "scopes",
}
_VERBS = {
    "list": "read",
    "get": "read",
    "create": "create",
    "update": "update",
    "rotate": "update",
    "disable": "update",
    "enable": "update",
    "reset": "update",
    "delete": "delete",
    "revoke": "delete",
}

#: Operation name (``keys.create``) → the permission it needs; ``None``: any valid token.
OPERATION_PERMISSIONS: dict[str, str | None] = {
    "store.info": None,
    "requests.list": "requests:read",
    "requests.get": "requests:read",
    "api_tokens.create": "apiTokens:manage",
    "api_tokens.list": "apiTokens:manage",
    "api_tokens.get": "apiTokens:manage",
    "api_tokens.revoke": "apiTokens:manage",
}


#: Permissions that include another: the reference's ``modelProviders:update`` sets up a
#: project's model providers, adding new ones included (its migration guide's token has only it).
IMPLIED: dict[str, frozenset[str]] = {
    "modelProviders:update": frozenset({"modelProviders:create"}),
}


def permission_for(operation: str) -> str | None:
    """The permission operation ``operation`` needs (``None``: any authenticated caller)."""
    if operation in OPERATION_PERMISSIONS:
        return OPERATION_PERMISSIONS[operation]
    resource, _, verb = operation.partition(".")
    return f"{_RESOURCES[resource]}:{_VERBS[verb]}"


class Forbidden(StoreError):
    """The caller is authenticated but may not do this (HTTP 403)."""

    status = 403


@attrs.frozen
class Principal:
    """An authenticated caller: ``permissions`` held at a scope (``scope_kind`` is
    ``organization``, ``team`` or ``project``; ``scope_id`` its id, ``None`` for the whole
    installation). ``superuser``: the bootstrap admin token, which may do everything."""

    name: str
    permissions: frozenset[str]
    scope_kind: str = "organization"
    scope_id: str | None = None
    superuser: bool = False
    token_id: str | None = None
    #: The scope's place in the tree (a team token knows its organization, a project token its
    #: team and organization): what the service compares a resource's place with.
    organization_id: str | None = None
    team_id: str | None = None
    project_id: str | None = None

    @property
    def scope_label(self) -> str:
        """``project:proj_x``; ``installation`` for the super-user."""
        if self.superuser or self.scope_id is None:
            return "installation"
        return f"{self.scope_kind}:{self.scope_id}"

    def can(self, permission: str | None) -> bool:
        """Whether the caller holds ``permission`` (at its own scope)."""
        if permission is None or self.superuser or permission in self.permissions:
            return True
        return any(permission in IMPLIED.get(held, ()) for held in self.permissions)

    def require(self, operation: str) -> None:
        """Raise :class:`Forbidden` unless the caller may run ``operation``."""
        needed = permission_for(operation)
        if not self.can(needed):
            raise Forbidden(
                f"this token lacks the {needed} permission needed for {operation}; create a "
                f"token that has it (tollway api-tokens create --permissions {needed} …)"
            )


SUPERUSER = Principal("admin token", frozenset(PERMISSIONS), superuser=True)


def parse_permissions(value: str | Iterable[Any]) -> tuple[str, ...]:
    """``"virtualKeys:create, budgets:update"`` (or a list) → the permissions, in
    :data:`PERMISSIONS` order without repeats; :class:`ValidationError` naming the valid ones
    when one is unknown or none is given. ``*`` (or ``all``) stands for every permission."""
    items = value.split(",") if isinstance(value, str) else list(value)
    wanted: set[str] = set()
    unknown: list[str] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        if text in ("*", "all"):
            wanted.update(PERMISSIONS)
        elif isinstance(text, str) and text in PERMISSIONS:
            wanted.add(text)
        elif text != "":
            unknown.append(repr(text)[:80])
    if unknown:
        raise ValidationError(
            f"permissions: unknown {', '.join(unknown)}; valid: {', '.join(PERMISSIONS)} "
            "(or * for all)"
        )
    if not wanted:
        raise ValidationError(
            f"permissions: give at least one of {', '.join(PERMISSIONS)} (comma-separated)"
        )
    return tuple(p for p in PERMISSIONS if p in wanted)


def principal_for_token(token: Any) -> Principal:
    """The principal of a stored API token (an :class:`~tollway_control_plane._api_tokens.
    ApiToken`)."""
    scope_ids = {
        "organization": token.organization_id,
        "team": token.team_id,
        "project": token.project_id,
    }
    return Principal(
        f"API token {token.id} ({token.name})",
        frozenset(token.permissions),
        scope_kind=token.scope_type,
        scope_id=scope_ids[token.scope_type],
        token_id=token.id,
        organization_id=token.organization_id,
        team_id=token.team_id,
        project_id=token.project_id,
    )


def principal_by_token_id(store: Store, token_id: str) -> Principal | None:
    """The principal of API token ``token_id`` while it is active, else ``None`` (revoked,
    expired, unknown): a console session keeps the token's id and asks again on each request.
    Cached for about a second, like :func:`authenticate`."""
    token = store.active_api_token(token_id)
    return None if token is None else principal_for_token(token)


def authenticate(
    admin_token: str | None, presented: str, *, store: Store | None = None
) -> Principal | None:
    """The principal ``presented`` (a bearer secret) stands for, or ``None``: the bootstrap
    ``admin_token``, or (given the ``store``) an API token that is neither revoked nor
    expired. API tokens work with or without an admin token. Look-ups are cached for about a
    second (:meth:`~tollway_control_plane.store.Store.resolve_api_token`): a revocation takes
    effect on every replica within that second."""
    if not presented:
        return None
    if admin_token and hmac.compare_digest(presented.encode(), admin_token.encode()):
        return SUPERUSER
    if store is not None and presented.startswith(TOKEN_PREFIX):
        token = store.resolve_api_token(presented)
        if token is not None:
            return principal_for_token(token)
    return None
