"""From a control-plane bundle (``config/{vk_id}``) to the core's :class:`~tollway.Principal`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tollway import InvalidAPIKey, Principal
from tollway.config import ProviderConfig

try:
    from tollway import ChainEntry  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # pragma: no cover - tollway/__init__ lists it in __all__ but lacks the import
    from tollway import ChainEntry

__all__ = ["bundle_expires_at", "principal_from_bundle", "rejection_error", "status_code"]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return str(value) if value else None


def principal_from_bundle(bundle: dict[str, Any]) -> Principal:
    """The principal a bundle describes; its provider chain in dispatch order."""
    chain = tuple(_entry(p) for p in bundle.get("providers") or ())
    extras = dict(bundle.get("extras") or {})
    budgets = bundle.get("budgets")
    if budgets is not None:
        # The key's applicable budgets (tollway-budgets enforces them; see
        # docs/plugins/budgets.md): the same list object for as long as the bundle is cached.
        extras["budgets"] = budgets
    return Principal(
        key_id=str(bundle["vk_id"]),
        display_prefix=str(bundle.get("display_prefix") or ""),
        name=str(bundle.get("name") or ""),
        organization_id=str(bundle.get("organization_id") or "default"),
        team_id=bundle.get("team_id"),
        project_id=bundle.get("project_id"),
        config=dict(bundle.get("config") or {}),
        revision=int(bundle.get("revision") or 0),
        chain=chain,
        principal_id=bundle.get("principal_id"),
        extras=extras,
        # Set: the chain is exactly the routing policy's; absent (older control planes, or no
        # policy): the gateway adds its config-file providers after the chain.
        routing_policy=_opt_str(bundle.get("routing_policy_id")),
        # Absent from older control planes: the chain's fixed order.
        routing_strategy=str(bundle.get("routing_strategy") or "ordered"),
    )


def _entry(p: dict[str, Any]) -> ChainEntry:
    """One provider of a bundle's chain: a stored provider, or (``config_provider``) a provider
    of the gateway's own config file named by a routing policy."""
    name = p.get("config_provider")
    if name is not None:
        return ChainEntry(
            ProviderConfig(name=str(name), type="config"),
            model=p.get("model"),
            config_provider=str(name),
            weight=_weight(p),
        )
    return ChainEntry(
        ProviderConfig(
            name=str(p["name"]),
            type=str(p["type"]),
            base_url=p.get("base_url"),
            api_key=p.get("api_key"),
            models=list(p["models"]) if p.get("models") is not None else None,
            priority=int(p.get("priority") or 0),
            config=dict(p.get("config") or {}),
            id=p.get("id"),
            revision=int(p.get("revision") or 0),
            rpm=_opt_int(p.get("rpm")),
            tpm=_opt_int(p.get("tpm")),
            rpd=_opt_int(p.get("rpd")),
        ),
        model=p.get("model"),
        weight=_weight(p),
    )


def _weight(p: dict[str, Any]) -> int:
    value = p.get("weight")
    return 1 if value is None else int(value)


def bundle_expires_at(bundle: dict[str, Any]) -> float | None:
    """The key's own expiry (``expires_at``: ISO 8601, unix seconds or null) as unix seconds."""
    value = bundle.get("expires_at")
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def status_code(bundle: dict[str, Any], now: float) -> str | None:
    """The control plane's rejection code a bundle implies (``revoked``, ``disabled``,
    ``expired``), or None for a usable key."""
    status = str(bundle.get("status") or "active").lower()
    if status in ("revoked", "disabled", "expired"):
        return status
    if status != "active":
        return "disabled"
    expires = bundle_expires_at(bundle)
    if expires is not None and now >= expires:
        return "expired"
    return None


_CODES = {
    "revoked": "key_revoked",
    "disabled": "key_disabled",
    "expired": "key_expired",
    "key_revoked": "key_revoked",
    "key_disabled": "key_disabled",
    "key_expired": "key_expired",
}


def rejection_error(code: str, message: str, prefix: str) -> InvalidAPIKey | None:
    """The client's 401 for a rejection code; None for ``unknown_key`` (the core then answers
    its own ``unknown_key`` 401 — "not mine")."""
    if code in ("unknown_key", "not_found", ""):
        return None
    ours = _CODES.get(code, code)
    shown = f"{prefix}…" if prefix else "this virtual key"
    if not message:
        message = {
            "key_revoked": f"the virtual key {shown} was revoked (revocation is permanent); "
            "create a new key and use it instead",
            "key_disabled": f"the virtual key {shown} is disabled; ask the operator to enable "
            "it (tollway virtual-keys enable <id>)",
            "key_expired": f"the virtual key {shown} has expired; ask the operator for a new "
            "key or a later expires_at",
        }.get(ours, f"the virtual key {shown} was refused by the control plane ({code})")
    return InvalidAPIKey(message, code=ours)
