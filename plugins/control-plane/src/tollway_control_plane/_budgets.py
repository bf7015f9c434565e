"""Budgets: their windows, the spend and usage of a budget's current window, and which
budgets apply to a key."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from tollway_control_plane._base import StoreBase
from tollway_control_plane._errors import NotFound, ValidationError
from tollway_control_plane._ledger import _LEDGER_COLUMN, USAGE_SUMS
from tollway_control_plane._records import Budget, Scope, VirtualKey, _records
from tollway_control_plane._util import UNSET, Unset, format_time, new_id, now
from tollway_control_plane._values import (
    BUDGET_SCOPES,
    BUDGET_WINDOWS,
    ON_BREACH,
    PER_END_USER,
    _micro_usd,
)


class BudgetsMixin(StoreBase):
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
