"""The store's vocabulary and its checks of single values: the scope, provider, budget and
change kinds it knows, money in micro-USD, scope text, names and provider prices. Pure
functions: nothing here touches the database."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from tollway.outbound import ALLOW_CIDRS_ENV
from tollway_control_plane._errors import ValidationError

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
