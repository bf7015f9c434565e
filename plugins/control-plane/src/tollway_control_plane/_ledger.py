"""The spend ledger: what a gateway's ledger entry carries, its checks, and the store's
ledger methods (record entries once; sum spend per scope and window)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tollway_control_plane._base import StoreBase
from tollway_control_plane._errors import ValidationError
from tollway_control_plane._util import format_time, parse_time
from tollway_control_plane._values import BUDGET_SCOPES

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
_INSERT_LEDGER = (
    f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(LEDGER_COLUMNS))}) ON CONFLICT (request_id) DO NOTHING"
)
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
                value = format_time(parse_time(str(value)))
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


class LedgerMixin(StoreBase):
    def ledger_has_rows(self) -> bool:
        return bool(self.db.query("SELECT request_id FROM ledger LIMIT 1"))

    def record_ledger(self, entries: Sequence[Mapping[str, Any]]) -> int:
        """Insert gateway ledger entries (checked by :func:`check_ledger_entry`), each once:
        an entry whose ``request_id`` is already recorded is skipped (a retried outbox batch
        never debits twice). Returns how many rows were new."""
        rows = [tuple(e.get(column) for column in LEDGER_COLUMNS) for e in entries]
        # One transaction and one prepared statement for the whole batch (the budgets outbox
        # sends every entry pending since its last flush in one call).
        with self.db.transaction() as tx:
            return tx.execute_many(_INSERT_LEDGER, rows)

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
