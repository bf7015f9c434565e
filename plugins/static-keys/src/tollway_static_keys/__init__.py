"""Authenticate virtual keys listed in the configuration (``[plugin.static-keys]``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs

from tollway import Credential, InvalidAPIKey, Principal, RequestContext, StashKey, hookimpl
from tollway.gateway import Gateway
from tollway.keys import KeyFormatError, KeyHasher, check_key_format, display_prefix

__all__ = ["StaticKey", "StaticKeysSettings"]

NAME = "static-keys"


@attrs.frozen
class StaticKey:
    secret: str = attrs.field(repr=False)
    name: str = ""
    id: str | None = None
    project_id: str = "default"
    team_id: str = "default"
    organization_id: str = "default"
    disabled: bool = False
    config: dict[str, Any] = attrs.field(factory=dict)
    #: Extra bundle fields for plugins, e.g. ``{"otel_auth_token": "…"}``.
    extras: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class StaticKeysSettings:
    keys: list[StaticKey] = attrs.field(factory=list)


#: Keys are looked up by an HMAC of the secret under a per-process key (never the secret).
_digest = KeyHasher(os.urandom(32))
_TABLE: StashKey[dict[str, tuple[Principal, bool]]] = StashKey("static-keys.table")


@hookimpl
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    register(NAME, StaticKeysSettings)


@hookimpl
def gateway_started(gateway: Gateway) -> None:
    settings: StaticKeysSettings = gateway.settings.plugin(NAME)
    table: dict[str, tuple[Principal, bool]] = {}
    #: Where each key id was seen: two keys with one id would share their rate-limit counters,
    #: budgets and spend, silently.
    ids: dict[str, int] = {}
    for i, key in enumerate(settings.keys):
        try:
            check_key_format(key.secret)
        except KeyFormatError as exc:
            raise ValueError(f"plugin.static-keys.keys[{i}].secret: {exc.message}") from None
        prefix = display_prefix(key.secret)
        digest = _digest(key.secret)
        if digest in table:
            first = next(j for j, k in enumerate(settings.keys) if k.secret == key.secret)
            raise ValueError(
                f"plugin.static-keys.keys[{i}].secret: the same secret as keys[{first}]; a "
                "secret authenticates one key, so remove one of the two or mint a new secret"
            )
        key_id = key.id or f"static_{i}_{prefix[-6:]}"
        if key_id in ids:
            raise ValueError(
                f"plugin.static-keys.keys[{i}].id: {key_id!r} is already the id of "
                f"keys[{ids[key_id]}]; keys with one id would share their rate limits, budgets "
                "and spend, so give each key its own id"
            )
        ids[key_id] = i
        principal = Principal(
            key_id=key_id,
            display_prefix=prefix,
            name=key.name,
            organization_id=key.organization_id,
            team_id=key.team_id,
            project_id=key.project_id,
            config=key.config,
            extras=key.extras,
        )
        table[digest] = (principal, key.disabled)
    gateway.stash[_TABLE] = table


@hookimpl
def authenticate(ctx: RequestContext, credential: Credential) -> Principal | None:
    table: dict[str, tuple[Principal, bool]] = ctx.gateway.stash[_TABLE]
    if not table:  # no static keys configured: nothing to hash (vk-auth answers)
        return None
    entry = table.get(_digest(credential.secret))
    if entry is None:
        return None
    principal, disabled = entry
    if disabled:
        raise InvalidAPIKey(
            f"the virtual key {principal.display_prefix}… is disabled; ask the operator to "
            "enable it",
            code="key_disabled",
        )
    return principal
