"""The console's read queries over the span store and the ledger (the overview's numbers, and a
request found by its trace id). Plain SQL that SQLite and PostgreSQL both run; every query is
bounded (a time window, a LIMIT)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from tollway_control_plane._util import format_time, now
from tollway_control_plane.traces import SpanStore

__all__ = ["Overview", "overview", "percentile", "request_for_trace"]

#: Gateway-overhead percentiles are computed over at most this many of the window's requests.
OVERHEAD_SAMPLE = 5000
TOP = 5

Overview = dict[str, Any]


def _in_projects(projects: Sequence[str] | None) -> tuple[str, list[Any]]:
    """`` AND project_id IN (…)`` for a caller limited to ``projects`` (``None``: no limit;
    empty: nothing matches)."""
    if projects is None:
        return "", []
    if not projects:
        return " AND 1 = 0", []
    return f" AND project_id IN ({', '.join('?' for _ in projects)})", list(projects)


def request_for_trace(
    spans: SpanStore, trace_id: str, projects: Sequence[str] | None = None
) -> str | None:
    """The request id of the newest stored span of trace ``trace_id`` (lowercase hex) among
    the requests of ``projects`` (``None``: all)."""
    limit, params = _in_projects(projects)
    rows = spans.db.query(
        "SELECT request_id FROM request_spans WHERE trace_id = ?"
        + limit
        + " ORDER BY started_at DESC LIMIT 1",
        [trace_id, *params],
    )
    return str(rows[0]["request_id"]) if rows else None


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (0..100) of ``values``, nearest-rank; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


def _where(since: str, projects: Sequence[str] | None, column: str) -> tuple[str, list[Any]]:
    limit, params = _in_projects(projects)
    return f" WHERE {column} >= ?" + limit, [since, *params]


def _overhead(value: Any) -> float | None:
    from tollway_control_plane._util import loads

    attributes = loads(value) if isinstance(value, str) else None
    found = attributes.get("langwatch.gateway.overhead_ms") if attributes else None
    if isinstance(found, int | float) and not isinstance(found, bool):
        return float(found)
    return None


def overview(
    spans: SpanStore, projects: Sequence[str] | None = None, at: datetime | None = None
) -> Overview:
    """Today's (UTC) requests, errors, gateway-overhead p50/p95, top keys and models; requests
    per hour over the last 24 hours; spend today and this month per project (``projects``: only
    those projects' requests and spend; ``None``: all)."""
    db = spans.db
    at = at or now()
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    since_day = format_time(day)
    where, params = _where(since_day, projects, "started_at")

    counts = db.query(
        "SELECT outcome, COUNT(*) AS n FROM request_spans" + where + " GROUP BY outcome", params
    )
    total = sum(int(r["n"]) for r in counts)
    errors = sum(int(r["n"]) for r in counts if r["outcome"] == "error")
    sample = db.query(
        "SELECT attributes FROM request_spans" + where + " ORDER BY started_at DESC LIMIT ?",
        [*params, OVERHEAD_SAMPLE],
    )
    overheads = [v for v in (_overhead(r["attributes"]) for r in sample) if v is not None]

    top_keys = db.query(
        "SELECT s.vk_id, k.name, COUNT(*) AS n FROM request_spans s "
        "LEFT JOIN virtual_keys k ON k.id = s.vk_id"
        + where.replace("started_at", "s.started_at").replace("project_id", "s.project_id")
        + " AND s.vk_id IS NOT NULL GROUP BY s.vk_id, k.name ORDER BY n DESC LIMIT ?",
        [*params, TOP],
    )
    top_models = db.query(
        "SELECT model, COUNT(*) AS n FROM request_spans"
        + where
        + " AND model IS NOT NULL GROUP BY model ORDER BY n DESC LIMIT ?",
        [*params, TOP],
    )

    since_24h = format_time(at.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23))
    where_h, params_h = _where(since_24h, projects, "started_at")
    hourly_rows = db.query(
        "SELECT SUBSTR(started_at, 1, 13) AS hour, outcome, COUNT(*) AS n FROM request_spans"
        + where_h
        + " GROUP BY SUBSTR(started_at, 1, 13), outcome",
        params_h,
    )
    hours = [
        format_time(at.replace(minute=0, second=0, microsecond=0) - timedelta(hours=h))[:13]
        for h in range(23, -1, -1)
    ]
    per_hour = {h: {"ok": 0, "error": 0} for h in hours}
    for row in hourly_rows:
        bucket = per_hour.get(str(row["hour"]))
        if bucket is not None:
            bucket["error" if row["outcome"] == "error" else "ok"] += int(row["n"])

    where_m, params_m = _where(format_time(month), projects, "created_at")
    spend_rows = db.query(
        "SELECT l.project_id, p.name, "
        "SUM(CASE WHEN l.created_at >= ? THEN l.cost_usd ELSE 0 END) AS today, "
        "SUM(l.cost_usd) AS month FROM ledger l LEFT JOIN projects p ON p.id = l.project_id"
        + where_m.replace("created_at", "l.created_at").replace("project_id", "l.project_id")
        + " GROUP BY l.project_id, p.name ORDER BY month DESC LIMIT 50",
        [since_day, *params_m],
    )
    return {
        "day": since_day[:10],
        "month": since_day[:7],
        "requests": total,
        "errors": errors,
        "overhead_p50_ms": percentile(overheads, 50),
        "overhead_p95_ms": percentile(overheads, 95),
        "overhead_sample": len(overheads),
        "top_keys": [
            {"id": r["vk_id"], "name": r["name"], "requests": int(r["n"])} for r in top_keys
        ],
        "top_models": [{"model": r["model"], "requests": int(r["n"])} for r in top_models],
        "hourly": [{"hour": h, **per_hour[h]} for h in hours],
        "spend": [
            {
                "project_id": r["project_id"],
                "name": r["name"],
                "today_micro_usd": int(r["today"] or 0),
                "month_micro_usd": int(r["month"] or 0),
            }
            for r in spend_rows
        ],
    }
