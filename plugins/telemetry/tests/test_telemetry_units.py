"""Unit tests: settings resolution, span attributes, export health, and the span pipeline
(exporter selection per project token, LRU, bounded queue) against a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from telemetry_harness import OTLPReceiver

from tollway import Attempt, Principal, RequestContext, Usage
from tollway.testing import free_port
from tollway_telemetry import (
    COST_USD,
    OTHER_PLUGIN_METRICS,
    RECORDED_METRICS,
    GatewayMetrics,
    TelemetrySettings,
    Tracing,
    resolve,
    span_attributes,
    token_for,
)
from tollway_telemetry._export import ExportHealth, classify
from tollway_telemetry._metrics import fallback_events, overhead_seconds
from tollway_telemetry._settings import traces_endpoint
from tollway_telemetry._spans import attempt_events

ROOT = Path(__file__).resolve().parents[3]


def make_ctx(**kw: Any) -> RequestContext:
    base: dict[str, Any] = {
        "request_id": "grq_01TESTTESTTESTTESTTESTTEST",
        "endpoint": "chat",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"",
        "headers": {},
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
    }
    base.update(kw)
    ctx = RequestContext(**base)
    return ctx


def finished_ctx(**kw: Any) -> RequestContext:
    ctx = make_ctx(**kw)
    ctx.finished = ctx.started + 0.05
    return ctx


# --- settings ---------------------------------------------------------------------------------


@given(
    host=st.sampled_from(["collector", "127.0.0.1:4318", "lw.example.com"]),
    prefix=st.sampled_from(["", "/api/otel", "/a/b"]),
    has_suffix=st.booleans(),
    slash=st.booleans(),
)
def test_traces_endpoint_appends_v1_traces_once(
    host: str, prefix: str, has_suffix: bool, slash: bool
) -> None:
    url = f"http://{host}{prefix}{'/v1/traces' if has_suffix else ''}{'/' if slash else ''}"
    out = traces_endpoint(url)
    assert out == f"http://{host}{prefix}/v1/traces"
    assert traces_endpoint(out) == out


def test_endpoint_precedence() -> None:
    s = TelemetrySettings()
    assert not resolve(s, {}).export  # embedded default: no export
    c = resolve(s, {"LW_GATEWAY_BASE_URL": "http://cp:5560/"})
    assert (c.export, c.endpoint) == (True, "http://cp:5560/api/otel/v1/traces")
    c = resolve(
        s,
        {"LW_GATEWAY_BASE_URL": "http://cp:5560", "GATEWAY_OTEL_DEFAULT_ENDPOINT": "http://o:4318"},
    )
    assert c.endpoint == "http://o:4318/v1/traces"
    c = resolve(s, {"LW_GATEWAY_BASE_URL": "http://cp:5560", "GATEWAY_OTEL_DEFAULT_ENDPOINT": ""})
    assert not c.export  # empty = no export
    c = resolve(TelemetrySettings(endpoint="http://toml:4318/"), {})
    assert c.endpoint == "http://toml:4318/v1/traces"
    c = resolve(
        TelemetrySettings(endpoint="http://toml:4318"),
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": "http://env"},
    )
    assert c.endpoint == "http://env/v1/traces"  # env first
    c = resolve(s, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://sdk:4318"})
    assert (c.export, c.endpoint) == (True, None)  # the SDK resolves it


def test_sampler_token_and_errors() -> None:
    s = TelemetrySettings(sampler_arg=0.5, auth_token="toml-token")
    c = resolve(s, {})
    assert (c.sampler_arg, c.static_token) == (0.5, "toml-token")
    c = resolve(s, {"GATEWAY_OTEL_SAMPLER_ARG": "0.25", "GATEWAY_OTEL_DEFAULT_AUTH_TOKEN": "env"})
    assert (c.sampler_arg, c.static_token) == (0.25, "env")
    assert "toml-token" not in repr(resolve(s, {}))
    with pytest.raises(ValueError, match="GATEWAY_OTEL_SAMPLER_ARG"):
        resolve(TelemetrySettings(), {"GATEWAY_OTEL_SAMPLER_ARG": "2"})
    with pytest.raises(ValueError, match="GATEWAY_OTEL_SAMPLER_ARG"):
        resolve(TelemetrySettings(), {"GATEWAY_OTEL_SAMPLER_ARG": "half"})
    with pytest.raises(ValueError, match="GATEWAY_OTEL_DEFAULT_ENDPOINT"):
        resolve(TelemetrySettings(), {"GATEWAY_OTEL_DEFAULT_ENDPOINT": "collector:4318"})
    with pytest.raises(ValueError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        resolve(TelemetrySettings(), {"OTEL_BSP_MAX_QUEUE_SIZE": "0"})
    assert resolve(TelemetrySettings(), {"OTEL_BSP_MAX_QUEUE_SIZE": "64"}).max_queue_size == 64
    assert not resolve(TelemetrySettings(), {"LOG_REQUESTS": "0"}).request_log
    assert resolve(TelemetrySettings(), {}).request_log


# --- span contents ----------------------------------------------------------------------------


def test_span_attributes_for_a_failed_fallback_stream() -> None:
    ctx = finished_ctx(stream=True, model="gpt-4o")
    ctx.principal = Principal(key_id="vk_1", display_prefix="lw_vk_live_01ABCDE", project_id="p1")
    ctx.attempts = [
        Attempt("prov-a", "openai", "gpt-4o", "error", 503, "http_503", 0.01, "open"),
        Attempt("prov-b", "anthropic", "claude-x", "ok", 200, "", 0.02),
    ]
    ctx.provider, ctx.provider_type, ctx.resolved_model = "prov-b", "anthropic", "claude-x"
    ctx.usage = Usage(10, 5, 3, 2)
    ctx.status, ctx.error_type = 200, "provider_error"
    ctx.stream_chunks, ctx.terminated_at_chunk = 4, 4
    ctx.first_byte_at = ctx.started + 0.03
    ctx.upstream_wait_s = 0.025
    ctx.stash[COST_USD] = 0.0125
    ctx.response_headers["X-LangWatch-Cache"] = "MISS"
    ctx.response_headers["x-langwatch-budget-warning"] = "project:85"
    a = span_attributes(ctx)
    assert a["langwatch.origin"] == "gateway"
    assert a["langwatch.virtual_key_id"] == "vk_1"
    assert a["langwatch.project_id"] == "p1"
    assert (a["gen_ai.system"], a["gen_ai.request.model"], a["gen_ai.response.model"]) == (
        "anthropic",
        "gpt-4o",
        "claude-x",
    )
    assert a["gen_ai.usage.input_tokens"] == 10
    assert a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.usage.cache_read.input_tokens"] == 3
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 2
    assert a["langwatch.cost_usd"] == 0.0125
    assert a["langwatch.fallback.count"] == 1
    assert a["langwatch.stream.chunk_count"] == 4
    assert a["langwatch.stream.terminated_at_chunk"] == 4
    assert a["error.type"] == "provider_error"
    assert a["langwatch.cache.outcome"] == "miss"
    assert a["langwatch.budget.decision"] == "warn"
    assert a["langwatch.gateway.overhead_ms"] == pytest.approx(5.0, abs=0.01)
    assert all(isinstance(v, str | bool | int | float) for v in a.values())
    assert "lw_vk_live_01ABCDE" not in a.values()  # not even the display prefix

    events = attempt_events(ctx, 1_000)
    assert [e[1]["langwatch.attempt.outcome"] for e in events] == ["error", "ok"]
    assert events[0][1]["langwatch.fallback.reason"] == "http_503"
    assert "langwatch.fallback.reason" not in events[1][1]
    # The breaker each attempt left behind: prov-a's failure opened it.
    states = [e[1]["langwatch.circuit_breaker.state"] for e in events]
    assert states == ["open", "closed"]
    assert events[0][2] == 1_000 + 10_000_000
    assert events[1][2] == 1_000 + 30_000_000


@pytest.mark.parametrize(
    ("error_type", "attempts", "stream", "terminated", "direction"),
    [
        ("guardrail_blocked", [], False, None, "pre"),
        (
            "guardrail_blocked",
            [Attempt("p", "openai", "m", "ok", 200, "", 0.1)],
            False,
            None,
            "post",
        ),
        (
            "guardrail_blocked",
            [Attempt("p", "openai", "m", "ok", 200, "", 0.1)],
            True,
            2,
            "stream_chunk",
        ),
    ],
)
def test_guardrail_direction(
    error_type: str, attempts: list[Attempt], stream: bool, terminated: int | None, direction: str
) -> None:
    ctx = finished_ctx(stream=stream)
    ctx.error_type, ctx.attempts, ctx.terminated_at_chunk = error_type, attempts, terminated
    a = span_attributes(ctx)
    assert a["langwatch.guardrail.decision"] == "block"
    assert a["langwatch.guardrail.direction"] == direction


def test_budget_block_and_rate_limit_dimension() -> None:
    ctx = finished_ctx()
    ctx.status, ctx.error_type = 402, "budget_exceeded"
    assert span_attributes(ctx)["langwatch.budget.decision"] == "block"
    ctx = finished_ctx()
    ctx.status, ctx.error_type = 429, "rate_limit_exceeded"
    ctx.response_headers["X-LangWatch-RateLimit-Dimension"] = "rpm"
    assert span_attributes(ctx)["langwatch.rate_limit.dimension"] == "rpm"


def test_overhead_and_fallback_events() -> None:
    ctx = make_ctx()
    assert overhead_seconds(ctx) is None
    ctx.finished = ctx.started + 1.0
    ctx.upstream_wait_s = 0.75
    assert overhead_seconds(ctx) == pytest.approx(0.25)
    ctx.stream, ctx.first_byte_at = True, ctx.started + 0.8
    assert overhead_seconds(ctx) == pytest.approx(0.05)
    ctx.upstream_wait_s = 5.0
    assert overhead_seconds(ctx) == 0.0
    assert fallback_events(ctx) == 0
    ctx.attempts = [
        Attempt("a", "openai", "m", "skipped", None, "rate_limit_exceeded", 0.0),
        Attempt("b", "openai", "m", "error", 500, "http_500", 0.1),
        Attempt("c", "openai", "m", "ok", 200, "", 0.1),
    ]
    assert fallback_events(ctx) == 2


def test_token_for() -> None:
    ctx = make_ctx()
    assert token_for(ctx, None) is None
    ctx.principal = Principal("k", "p", extras={"otel_auth_token": "tok"})
    assert token_for(ctx, None) == "tok"
    assert token_for(ctx, "static") == "static"
    ctx.principal = Principal("k", "p", extras={"otel_auth_token": 5})
    assert token_for(ctx, None) is None


# --- export health ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_export_health_grace_then_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = ExportHealth(30, 30, "http://c/v1/traces", clock=clock)
    caplog.set_level(logging.WARNING, "tollway_telemetry")
    for kind in ("auth", "connection", "auth"):
        assert not health.failure(kind, "status=401", 1)
    assert health.swallowed == 3
    assert health.failure("http", "status=500", 1)  # not a start-up kind: logged at once
    clock.now += 31
    assert health.failure("auth", "status=401", 2)
    assert not health.failure("auth", "status=401", 2)  # rate-limited
    clock.now += 31
    assert health.failure("connection", "error=ConnectionError", 1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "failures_since_last_warning=2" in lines[2]


def test_export_health_first_success_ends_grace() -> None:
    health = ExportHealth(30, 30, "e", clock=Clock())
    health.success()
    assert health.failure("auth", "status=403", 1)


def test_classify() -> None:
    import requests

    assert classify(401, None)[0] == "auth"
    assert classify(403, None)[0] == "auth"
    assert classify(500, None) == ("http", "status=500")
    assert classify(None, requests.exceptions.ConnectionError())[0] == "connection"
    assert classify(None, requests.exceptions.ReadTimeout())[0] == "connection"
    assert classify(None, ValueError())[0] == "error"


# --- the pipeline against a real OTLP/HTTP receiver ------------------------------------------


def tracing_for(receiver_url: str, **settings: Any) -> tuple[Tracing, dict[str, int]]:
    dropped: dict[str, int] = {}

    def on_drop(reason: str, n: int) -> None:
        dropped[reason] = dropped.get(reason, 0) + n

    config = resolve(
        TelemetrySettings(**settings),
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": receiver_url, "OTEL_BSP_SCHEDULE_DELAY": "50"},
    )
    return Tracing(config, on_drop), dropped


def principal_ctx(project: str, token: str | None) -> RequestContext:
    ctx = finished_ctx(
        trace_id=f"{time.time_ns():032x}"[-32:], span_id=f"{time.time_ns():016x}"[-16:]
    )
    extras = {"otel_auth_token": token} if token else {}
    ctx.principal = Principal(
        key_id=f"vk_{project}", display_prefix="x", project_id=project, extras=extras
    )
    ctx.request_id = f"grq_{project}_{time.time_ns()}"
    ctx.status = 200
    return ctx


def test_each_project_exports_with_its_own_token() -> None:
    receiver = OTLPReceiver()
    tracing, _ = tracing_for(receiver.url)
    try:
        ctxs = [principal_ctx(p, t) for p, t in [("a", "tok-a"), ("b", "tok-b"), ("c", None)]]
        ctxs.append(principal_ctx("a", "tok-a"))
        for ctx in ctxs:
            assert tracing.record(ctx)
        assert set(tracing.sinks) == {"tok-a", "tok-b", None}
        tracing.flush()
        for ctx in ctxs:
            span = receiver.span_for(ctx.request_id)
            token = ctx.principal.extras.get("otel_auth_token") if ctx.principal else None
            assert span["token"] == token
            assert span["attributes"]["langwatch.project_id"] == ctx.principal.project_id  # type: ignore[union-attr]
            assert span["span_id"] == ctx.span_id
            assert span["trace_id"] == ctx.trace_id
            assert span["parent_span_id"] == ""
            assert span["path"] == "/v1/traces"
            assert abs(span["end"] - span["start"] - 50_000_000) <= 1
    finally:
        asyncio.run(tracing.shutdown(2))
        receiver.close()


def test_static_token_overrides_every_project() -> None:
    receiver = OTLPReceiver()
    tracing, _ = tracing_for(receiver.url, auth_token="static-token")
    try:
        ctxs = [principal_ctx("a", "tok-a"), principal_ctx("b", "tok-b")]
        for ctx in ctxs:
            tracing.record(ctx)
        assert list(tracing.sinks) == ["static-token"]
        tracing.flush()
        assert {receiver.span_for(c.request_id)["token"] for c in ctxs} == {"static-token"}
    finally:
        asyncio.run(tracing.shutdown(2))
        receiver.close()


def test_lru_evicts_and_flushes_the_oldest_exporter() -> None:
    receiver = OTLPReceiver()
    tracing, _ = tracing_for(receiver.url, max_exporters=2)
    try:
        first = principal_ctx("a", "tok-a")
        tracing.record(first)
        tracing.record(principal_ctx("b", "tok-b"))
        tracing.record(principal_ctx("c", "tok-c"))
        assert set(tracing.sinks) == {"tok-b", "tok-c"}
        assert receiver.span_for(first.request_id)["token"] == "tok-a"  # flushed on eviction
    finally:
        asyncio.run(tracing.shutdown(2))
        receiver.close()


def test_sampler_ratio_and_unsampled_parent() -> None:
    receiver = OTLPReceiver()
    tracing, _ = tracing_for(receiver.url, sampler_arg=0.0)
    try:
        assert not tracing.record(principal_ctx("a", None))
        ctx = principal_ctx("a", None)
        ctx.parent_span_id, ctx.trace_flags = "b7ad6b7169203331", 1
        assert tracing.record(ctx)  # the caller sampled it: parent-based
        ctx = principal_ctx("a", None)
        ctx.parent_span_id, ctx.trace_flags = "b7ad6b7169203331", 0
        assert not tracing.record(ctx)
    finally:
        asyncio.run(tracing.shutdown(2))
        receiver.close()


def test_bounded_queue_counts_drops() -> None:
    receiver = OTLPReceiver(delay=0.5)
    tracing, dropped = tracing_for(receiver.url, max_queue_size=4)
    try:
        total = 30
        for i in range(total):
            ctx = principal_ctx("a", None)
            ctx.request_id = f"grq_q{i}"
            tracing.record(ctx)
        assert dropped.get("queue_full", 0) > 0
        tracing.flush()
        received = len(receiver.all_spans())
        # Dropped spans are counted; the count may run one batch (4) ahead at the limit.
        assert total <= received + dropped["queue_full"] <= total + 4
    finally:
        asyncio.run(tracing.shutdown(2))
        receiver.close()


def test_unauthorized_exports_are_quiet_in_the_grace_then_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = OTLPReceiver(status=401)
    quiet, quiet_dropped = tracing_for(receiver.url)
    loud, loud_dropped = tracing_for(receiver.url, startup_grace_seconds=0)
    try:
        for _ in range(3):
            quiet.record(principal_ctx("a", "t"))
            quiet.flush()
            loud.record(principal_ctx("a", "t"))
            loud.flush()
        assert quiet_dropped == {"export_failed": 3}
        assert loud_dropped == {"export_failed": 3}
        assert quiet.health.swallowed == 3
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "otel_export_failed" in warnings[0] and "status=401" in warnings[0]
        assert "kind=auth" in warnings[0]
        # The exporter's own per-batch ERROR lines are silenced.
        assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
    finally:
        asyncio.run(quiet.shutdown(2))
        asyncio.run(loud.shutdown(2))
        receiver.close()


def test_shutdown_gives_up_after_its_timeout_when_the_collector_is_down() -> None:
    port = free_port()  # nothing listens there
    tracing, _ = tracing_for(f"http://127.0.0.1:{port}", shutdown_timeout_seconds=0.5)
    tracing.record(principal_ctx("a", None))
    t0 = time.monotonic()
    asyncio.run(tracing.shutdown(0.5))
    assert time.monotonic() - t0 < 3


# --- metrics and the dashboard ----------------------------------------------------------------


def test_metrics_observe_and_parse() -> None:
    class FakeBreaker:
        opens = 2

        def state(self) -> str:
            return "open"

    class FakeGateway:
        in_flight = 3
        streaming_active = 1
        breakers = {"p1": FakeBreaker()}

    metrics = GatewayMetrics(FakeGateway())  # type: ignore[arg-type]
    ctx = finished_ctx()
    ctx.status = 200
    ctx.attempts = [
        Attempt("p1", "openai", "m", "error", 500, "http_500", 0.01),
        Attempt("p2", "openai", "m", "ok", 200, "", 0.01),
    ]
    metrics.observe(ctx)
    ctx2 = finished_ctx(path="/weird")
    metrics.observe(ctx2)
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert (
        samples[
            ("gateway_http_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))
        ]
        == 1
    )
    assert samples[("gateway_http_requests_total", (("route", "other"), ("status", "0")))] == 1
    assert (
        samples[("gateway_provider_attempts_total", (("outcome", "error"), ("provider", "p1")))]
        == 1
    )
    assert samples[("gateway_fallback_events_total", ())] == 1
    assert samples[("gateway_in_flight_requests", ())] == 3
    assert samples[("gateway_streaming_active", ())] == 1
    assert samples[("gateway_overhead_seconds_count", ())] == 2
    state = "gateway_circuit_breaker_state"
    assert samples[(state, (("provider", "p1"), ("state", "open")))] == 1
    assert samples[(state, (("provider", "p1"), ("state", "closed")))] == 0
    assert samples[("gateway_circuit_breaker_opens_total", (("provider", "p1"),))] == 2
    for name in RECORDED_METRICS:
        family = name.removesuffix("_total")
        assert family in families, name


def test_grafana_dashboard_has_a_panel_per_metric() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for name in (*RECORDED_METRICS, *OTHER_PLUGIN_METRICS):
        assert any(re.search(rf"\b{name}", e) for e in exprs), f"no panel queries {name}"
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles))


def test_redact_url_drops_credentials() -> None:
    from tollway_telemetry._settings import redact_url

    assert redact_url("https://user:pw@c.example:4318/v1/traces?token=x") == (
        "https://c.example:4318/v1/traces"
    )
    assert redact_url("http://[::1]:4318/v1/traces") == "http://[::1]:4318/v1/traces"


# --- the in-process span sink (tollway.spans) ------------------------------------------------


class RecordingSink:
    """A :class:`tollway.spans.SpanSink` that keeps what it is given (and can fail)."""

    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[bytes, str | None]] = []
        self.fail = fail

    def export(self, body: bytes, auth_token: str | None) -> None:
        if self.fail:
            raise RuntimeError("store closed")
        self.batches.append((body, auth_token))


def _decoded(body: bytes) -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    return [s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_in_process_sink_gets_otlp_protobuf_with_the_attempts() -> None:
    sink = RecordingSink()
    config = resolve(TelemetrySettings(), {})
    assert not config.export and config.endpoint_source == "unset"
    config = attrs.evolve(config, export=True, endpoint_source="in-process")
    tracing = Tracing(config, lambda reason, n: None, span_sink=sink)
    try:
        ctx = principal_ctx("p1", "tok-p1")
        ctx.attempts = [Attempt("mp_1", "openai", "gpt-4o", "ok", 200, "", 0.02)]
        ctx.upstream_wait_s = 0.02
        assert tracing.record(ctx)
        tracing.flush()
        [(body, token)] = sink.batches
        assert token == "tok-p1"
        [span] = _decoded(body)
        assert span.span_id.hex() == ctx.span_id
        attributes = {kv.key: kv.value for kv in span.attributes}
        assert attributes["langwatch.gateway_request_id"].string_value == ctx.request_id
        assert attributes["langwatch.upstream.duration_ms"].double_value == 20.0
        assert attributes["langwatch.attempt.count"].int_value == 1
        [event] = span.events
        event_attributes = {kv.key: kv.value for kv in event.attributes}
        assert event_attributes["langwatch.credential.id"].string_value == "mp_1"
        assert "x" not in [v.string_value for v in attributes.values()]  # no display prefix
    finally:
        asyncio.run(tracing.shutdown(2))


def test_a_failing_in_process_sink_counts_the_drop() -> None:
    dropped: dict[str, int] = {}

    def on_drop(reason: str, n: int) -> None:
        dropped[reason] = dropped.get(reason, 0) + n

    config = attrs.evolve(resolve(TelemetrySettings(), {}), export=True)
    tracing = Tracing(config, on_drop, span_sink=RecordingSink(fail=True))
    try:
        assert tracing.record(principal_ctx("p1", None))
        tracing.flush()
        assert dropped == {"export_failed": 1}
        assert tracing.health.endpoint == "in-process:recording"
    finally:
        asyncio.run(tracing.shutdown(2))


def test_the_export_batch_size_follows_otel_bsp_max_export_batch_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64")
    tracing, _ = tracing_for("http://127.0.0.1:9/v1/traces")
    assert tracing.sink_for(None).processor._batch_processor._max_export_batch_size == 64
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "not-a-number")
    tracing, _ = tracing_for("http://127.0.0.1:9/v1/traces")
    assert tracing.sink_for(None).processor._batch_processor._max_export_batch_size == 512
