"""Budgets as a key carries them, which apply to a request, and their spend counters.

A key's budgets arrive in ``principal.extras["budgets"]``: from the control plane's bundle
(vk-auth) or from a static key's ``extras = { budgets = [...] }``. Both shapes are accepted::

    {"id": "bud_…", "scope_type": "project", "scope_id": "proj_…", "window": "month",
     "limit_micro_usd": 10000, "on_breach": "block", "reset_at": null, "name": null}

    { scope = "project", window = "month", limit_usd = 0.01, on_breach = "warn" }

A scope without an id means the key's own (``project`` → the key's project). A static budget
without an ``id`` is identified by ``<scope>:<id>:<window>``, so two static keys of one project
share one ``project`` budget's counter.

End users: ``end_user:<id>`` caps that end user; ``end_user:*`` caps *each* end user of the
organization separately (one counter per end user). A request's end user is its
``X-LangWatch-End-User-Id`` header, else its body's ``user`` string; a request without one is
not counted against end-user budgets.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from tollway import Principal, RequestContext
from tollway_budgets._windows import WINDOWS, format_us, parse_us, window_bounds

__all__ = [
    "PER_END_USER",
    "SCOPES",
    "Budget",
    "BudgetConfigError",
    "Counter",
    "counters_for",
    "counters_valid",
    "end_user_of",
    "parse_budgets",
]

SCOPES = ("organization", "team", "project", "virtual_key", "principal", "end_user")
PER_END_USER = "*"
END_USER_HEADER = "x-langwatch-end-user-id"
_MAX_END_USER = 256
_SAFE_KEY = re.compile(r"[A-Za-z0-9._@+=-]{1,64}")
#: Ledger column per scope (what a spend query and the outbox's pending sums match on).
LEDGER_FIELD = {
    "organization": "organization_id",
    "team": "team_id",
    "project": "project_id",
    "virtual_key": "vk_id",
    "principal": "principal_id",
    "end_user": "end_user_id",
}
_DAY_MS = 86_400_000
#: ``total`` counters idle this long expire from Redis (and are seeded from the ledger again).
_TOTAL_IDLE_MS = 35 * _DAY_MS


class BudgetConfigError(ValueError):
    """A key's budgets cannot be read; the message names the entry and field."""


@attrs.frozen
class Budget:
    """One budget, normalised: ``limit`` in micro-USD, ``reset_us`` in epoch microseconds."""

    id: str
    scope_type: str
    #: The scope's id; ``*`` for a per-end-user budget.
    scope_id: str
    window: str
    limit: int
    block: bool
    reset_us: int | None = None
    name: str | None = None
    #: This budget's bound on the output reserved for a request without ``max_tokens``
    #: (None: ``plugin.budgets.default_max_output_tokens``).
    default_max_output_tokens: int | None = None

    @property
    def label(self) -> str:
        """``project:month`` — how errors and warnings name it."""
        return f"{self.scope_type}:{self.window}"


def _own_scope(principal: Principal, scope_type: str) -> str | None:
    return {
        "organization": principal.organization_id,
        "team": principal.team_id,
        "project": principal.project_id,
        "virtual_key": principal.key_id,
        "principal": principal.principal_id,
    }.get(scope_type)


def _limit(raw: Mapping[str, Any], where: str) -> int:
    if raw.get("limit_micro_usd") is not None:
        value = raw["limit_micro_usd"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BudgetConfigError(f"{where}.limit_micro_usd: must be a non-negative integer")
        return value
    value = raw.get("limit_usd")
    if value is None or isinstance(value, bool):
        raise BudgetConfigError(f"{where}: needs limit_usd (USD) or limit_micro_usd")
    try:
        amount = Decimal(str(value).strip().lstrip("$")) * 1_000_000
    except InvalidOperation:
        raise BudgetConfigError(f"{where}.limit_usd: {value!r} is not an amount in USD") from None
    if not amount.is_finite() or amount < 0 or amount != amount.to_integral_value():
        raise BudgetConfigError(
            f"{where}.limit_usd: {value!r} must be a non-negative amount, at most 6 decimals"
        )
    return int(amount)


def parse_budgets(raw: Any, principal: Principal) -> tuple[Budget, ...]:
    """The budgets in ``principal.extras["budgets"]``; raises :class:`BudgetConfigError`."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise BudgetConfigError("budgets: must be a list")
    out = []
    for i, item in enumerate(raw):
        where = f"budgets[{i}]"
        if not isinstance(item, Mapping):
            raise BudgetConfigError(f"{where}: must be an object")
        scope_type = item.get("scope_type")
        scope_id = item.get("scope_id")
        scope = item.get("scope")
        if scope_type is None and isinstance(scope, str):
            scope_type, _, ident = scope.partition(":")
            scope_id = ident.strip() or None
        if scope_type not in SCOPES:
            raise BudgetConfigError(f"{where}.scope: must be one of {', '.join(SCOPES)}[:ID]")
        if scope_id is None:
            scope_id = _own_scope(principal, scope_type)
            if scope_id is None:
                raise BudgetConfigError(
                    f"{where}.scope: a {scope_type} budget needs an id ({scope_type}:ID)"
                    + ("" if scope_type == "end_user" else " — this key has none of its own")
                )
        if not isinstance(scope_id, str) or not scope_id:
            raise BudgetConfigError(f"{where}.scope_id: must be a non-empty string")
        window = item.get("window", "month")
        if window not in WINDOWS:
            raise BudgetConfigError(f"{where}.window: must be one of {', '.join(WINDOWS)}")
        on_breach = item.get("on_breach", "block")
        if on_breach not in ("block", "warn"):
            raise BudgetConfigError(f"{where}.on_breach: must be block or warn")
        reset = item.get("reset_at")
        try:
            reset_us = None if reset in (None, "") else parse_us(str(reset))
        except ValueError:
            raise BudgetConfigError(f"{where}.reset_at: {reset!r} is not an ISO time") from None
        budget_id = item.get("id") or f"{scope_type}:{scope_id}:{window}"
        if not isinstance(budget_id, str):
            raise BudgetConfigError(f"{where}.id: must be a string")
        name = item.get("name")
        max_output = item.get("default_max_output_tokens")
        if max_output is not None and (
            isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 0
        ):
            raise BudgetConfigError(f"{where}.default_max_output_tokens: must be an integer >= 0")
        out.append(
            Budget(
                id=budget_id,
                scope_type=scope_type,
                scope_id=scope_id,
                window=window,
                limit=_limit(item, where),
                block=on_breach == "block",
                reset_us=reset_us,
                name=name if isinstance(name, str) else None,
                default_max_output_tokens=max_output,
            )
        )
    return tuple(out)


def end_user_of(ctx: RequestContext) -> str | None:
    """The request's end user: ``X-LangWatch-End-User-Id``, else the body's ``user``."""
    value = ctx.headers.get(END_USER_HEADER)
    if not value:
        user = ctx.body.get("user")
        value = user if isinstance(user, str) else None
    if not value:
        return None
    value = value.strip()
    if len(value) > _MAX_END_USER:
        value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return value or None


@attrs.frozen
class Counter:
    """One spend counter an admission touches: a budget's current window (for per-end-user
    budgets, one end user's), its Redis keys and what the request reserves on it."""

    budget: Budget
    #: Identity: ``<budget id>:<since>[:eu:<end user>]`` (also the in-memory store's key).
    ident: str
    #: Redis keys: the hash {spent, reserved, p, r:<request id>…} and the reservation zset.
    hash_key: str
    zset_key: str
    organization_id: str
    #: The id this counter sums in the ledger (the end user's for ``end_user:*``).
    scope_value: str
    since_us: int
    until_us: int | None
    #: When Redis may drop the keys (the window is over and no request can settle into it).
    expire_at_ms: int
    #: The two Redis keys, and the budget's (limit, block) as admit.lua takes them: built once
    #: per counter, not per request.
    keys: tuple[str, str] = attrs.field(
        init=False, default=attrs.Factory(lambda c: (c.hash_key, c.zset_key), takes_self=True)
    )
    admit_args: tuple[int, int] = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda c: (c.budget.limit, 1 if c.budget.block else 0), takes_self=True
        ),
    )

    def spend_query(self) -> dict[str, Any]:
        """The control plane's ``spend`` query for this counter."""
        return {
            "organization_id": self.organization_id,
            "scope_type": self.budget.scope_type,
            "scope_id": self.scope_value,
            "since": format_us(self.since_us),
            "until": None if self.until_us is None else format_us(self.until_us),
        }

    def matches(self, entry: Mapping[str, Any], created_us: int) -> bool:
        """Whether a ledger entry counts on this counter."""
        if created_us < self.since_us or (
            self.until_us is not None and created_us >= self.until_us
        ):
            return False
        if entry.get("organization_id") != self.organization_id:
            return False
        return bool(entry.get(LEDGER_FIELD[self.budget.scope_type]) == self.scope_value)


def _key_part(value: str) -> str:
    if _SAFE_KEY.fullmatch(value):
        return value
    return "h" + hashlib.sha256(value.encode()).hexdigest()[:32]


def counters_for(
    budgets: Sequence[Budget],
    principal: Principal,
    end_user: str | None,
    at_us: int,
    prefix: str,
    grace_ms: int,
) -> list[Counter]:
    """The counters a request admitted at ``at_us`` touches, one per applicable budget."""
    out: list[Counter] = []
    seen: set[str] = set()
    org = principal.organization_id
    for budget in budgets:
        scope_value = budget.scope_id
        per_end_user = False
        if budget.scope_type == "end_user":
            if end_user is None:
                continue
            if budget.scope_id == PER_END_USER:
                scope_value, per_end_user = end_user, True
            elif budget.scope_id != end_user:
                continue
        elif _own_scope(principal, budget.scope_type) != budget.scope_id:
            continue  # listed for another key (a static config copied between keys)
        since, until = window_bounds(budget.window, at_us)
        if budget.reset_us is not None and since < budget.reset_us <= at_us:
            since = budget.reset_us
        ident = f"{_key_part(budget.id)}:{since}"
        if per_end_user:
            ident += f":eu:{_key_part(end_user or '')}"
        if ident in seen:
            continue  # listed twice (a static config): one counter, one reservation
        seen.add(ident)
        base = f"{prefix}:{{org:{org}}}:b:{ident}"
        expire = at_us // 1000 + _TOTAL_IDLE_MS if until is None else until // 1000 + grace_ms
        out.append(
            Counter(
                budget=budget,
                ident=ident,
                hash_key=f"{base}:c",
                zset_key=f"{base}:z",
                organization_id=org,
                scope_value=scope_value,
                since_us=since,
                until_us=until,
                expire_at_ms=expire,
            )
        )
    return out


#: How long a ``total`` budget's counters are reused: their Redis expiry slides with each
#: admission (35 idle days), so a reused counter's is at most this much older.
TOTAL_REUSE_US = 60_000_000


def counters_valid(counters: Sequence[Counter], at_us: int) -> tuple[int, int]:
    """``[from, until)`` (epoch µs) around ``at_us`` in which :func:`counters_for` gives the
    same counters for the same key, end user and budgets: no window ends and no ``reset_at``
    passes in it."""
    lo, hi = 0, at_us + TOTAL_REUSE_US
    for c in counters:
        lo = max(lo, c.since_us)
        if c.until_us is not None:
            hi = min(hi, c.until_us)
        reset = c.budget.reset_us
        if reset is not None and reset > at_us:
            hi = min(hi, reset)
    return lo, hi
