"""The console overview's queries on both stores (SQLite and PostgreSQL): counts, errors,
gateway-overhead percentiles, top keys and models, requests per hour, spend per project."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from control_plane_helpers import PEPPER, pg_url, store_url  # noqa: F401 (fixtures)
from hypothesis import given
from hypothesis import strategies as st

from tollway_control_plane.console.charts import hourly_bars, meter, meter_state
from tollway_control_plane.console.queries import overview, percentile, request_for_trace
from tollway_control_plane.store import Store, check_ledger_entry
from tollway_control_plane.traces import SpanRow, SpanStore

AT = datetime(2026, 3, 14, 15, 30, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    s = Store.open(store_url, PEPPER)
    try:
        yield s
    finally:
        s.close()


def _span(i: int, *, at: datetime, project: str, key: str | None, model: str, ok: bool) -> SpanRow:
    ns = int(at.timestamp() * 1e9)
    return SpanRow(
        request_id=f"grq_{i}",
        trace_id=f"{i + 1:032x}",
        span_id=f"{i + 1:016x}",
        parent_span_id=None,
        name="chat",
        start_ns=ns,
        end_ns=ns + 10_000_000,
        attributes={
            "langwatch.gateway_request_id": f"grq_{i}",
            "langwatch.project_id": project,
            "gen_ai.request.model": model,
            "http.response.status_code": 200 if ok else 502,
            "langwatch.gateway.overhead_ms": float(i + 1),
            **({"langwatch.virtual_key_id": key} if key else {}),
        },
        events=[],
        resource={},
        status_error=not ok,
    )


def test_overview_numbers(store: Store) -> None:
    spans = SpanStore(store.db, retention_days=100_000)  # AT is a fixed day in the past
    mine = store.create_project("mine")
    other = store.create_project("other")
    key, _ = store.create_key(name="busy key", scope=f"project:{mine.id}")
    rows = [
        _span(0, at=AT - timedelta(minutes=5), project=mine.id, key=key.id, model="m-a", ok=True),
        _span(1, at=AT - timedelta(minutes=50), project=mine.id, key=key.id, model="m-a", ok=False),
        _span(2, at=AT - timedelta(hours=2), project=mine.id, key=None, model="m-b", ok=True),
        _span(3, at=AT - timedelta(hours=3), project=other.id, key=None, model="m-c", ok=True),
        # Yesterday: in the 24-hour chart, not in today's numbers.
        _span(4, at=AT - timedelta(hours=20), project=mine.id, key=None, model="m-old", ok=True),
    ]
    spans.insert(rows)
    entries = [
        ("l1", AT - timedelta(hours=1), mine.id, 1500),
        ("l2", AT - timedelta(days=3), mine.id, 500),  # this month, not today
        ("l3", AT - timedelta(hours=1), other.id, 7),
        ("l4", AT - timedelta(days=40), mine.id, 999_999),  # last month
    ]
    store.record_ledger(
        [
            check_ledger_entry(
                {
                    "request_id": rid,
                    "created_at": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "organization_id": "org_default",
                    "project_id": project,
                    "cost_micro_usd": cost,
                }
            )
            for rid, when, project, cost in entries
        ]
    )

    o = overview(spans, at=AT)
    assert o["day"] == "2026-03-14" and o["month"] == "2026-03"
    assert o["requests"] == 4 and o["errors"] == 1
    assert (o["overhead_p50_ms"], o["overhead_p95_ms"]) == (2.0, 4.0)
    assert o["top_keys"] == [{"id": key.id, "name": "busy key", "requests": 2}]
    assert o["top_models"][0] == {"model": "m-a", "requests": 2}
    assert {m["model"] for m in o["top_models"]} == {"m-a", "m-b", "m-c"}
    hourly = {h["hour"]: h for h in o["hourly"]}
    assert len(o["hourly"]) == 24 and o["hourly"][-1]["hour"] == "2026-03-14T15"
    assert hourly["2026-03-14T15"] == {"hour": "2026-03-14T15", "ok": 1, "error": 0}
    assert hourly["2026-03-14T14"]["error"] == 1
    assert hourly["2026-03-13T19"]["ok"] == 1
    spend = {s["name"]: s for s in o["spend"]}
    assert spend["mine"]["today_micro_usd"] == 1500
    assert spend["mine"]["month_micro_usd"] == 2000
    assert spend["other"]["month_micro_usd"] == 7

    scoped = overview(spans, [other.id], at=AT)
    assert scoped["requests"] == 1 and scoped["top_keys"] == []
    assert [s["name"] for s in scoped["spend"]] == ["other"]
    assert "busy key" not in str(hourly_bars(scoped["hourly"]))
    both = overview(spans, [mine.id, other.id], at=AT)  # a team's projects
    assert both["requests"] == 4 and len(both["spend"]) == 2
    nothing = overview(spans, [], at=AT)  # a token whose scope holds no project yet
    assert nothing["requests"] == 0 and nothing["spend"] == [] and nothing["top_models"] == []

    assert request_for_trace(spans, f"{1:032x}") == "grq_0"
    assert request_for_trace(spans, f"{1:032x}", [mine.id, other.id]) == "grq_0"
    assert request_for_trace(spans, f"{1:032x}", [other.id]) is None
    assert request_for_trace(spans, f"{1:032x}", []) is None
    assert request_for_trace(spans, "f" * 32) is None


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_percentiles_are_values_in_order(values: list[float]) -> None:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    assert p50 in values and p95 in values
    assert p50 is not None and p95 is not None and p50 <= p95
    assert percentile(values, 100) == max(values)
    assert percentile([], 50) is None


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_meter_state_thresholds(spent: int, limit: int) -> None:
    state = meter_state(spent, limit)
    if spent >= limit:
        assert state == "breached"
    elif spent >= 0.8 * limit:
        assert state == "warning"
    else:
        assert state == "ok"
    svg = str(meter(spent, limit, "<b>label</b>"))
    assert "<b>" not in svg and "&lt;b&gt;" in svg
