"""Who calls the admin API and the console, and what they may do.

A caller is a :class:`Principal`: the bootstrap super-user (``TOLLWAY_ADMIN_TOKEN``) or an API
token with :data:`PERMISSIONS` at a scope. Every admin operation names the permission it needs
(:data:`OPERATION_PERMISSIONS`); :meth:`tollway_control_plane.service.Service.call` checks it for
the admin API, the console and the CLI alike, so there is one place that decides.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import attrs

from tollway_control_plane._errors import StoreError

if TYPE_CHECKING:
    from tollway_control_plane.store import Store

__all__ = [
    "OPERATION_PERMISSIONS",
    "PERMISSIONS",
    "SUPERUSER",
    "Forbidden",
    "Principal",
    "authenticate",
    "permission_for",
]

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

    def can(self, permission: str | None) -> bool:
        """Whether the caller holds ``permission`` (at its own scope)."""
        return permission is None or self.superuser or permission in self.permissions

    def require(self, operation: str) -> None:
        """Raise :class:`Forbidden` unless the caller may run ``operation``."""
        needed = permission_for(operation)
        if not self.can(needed):
            raise Forbidden(
                f"this token lacks the {needed} permission needed for {operation}; create a "
                f"token that has it (tollway api-tokens create --permissions {needed} …)"
            )


SUPERUSER = Principal("admin token", frozenset(PERMISSIONS), superuser=True)


def authenticate(
    admin_token: str | None, presented: str, *, store: Store | None = None
) -> Principal | None:
    """The principal ``presented`` (a bearer secret) stands for, or ``None``: the bootstrap
    ``admin_token``, or (given the ``store``) an API token that is neither revoked nor
    expired."""
    if admin_token and hmac.compare_digest(presented.encode(), admin_token.encode()):
        return SUPERUSER
    return None
