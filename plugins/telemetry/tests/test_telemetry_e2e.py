"""End to end: the gateway subprocess exports to a real OTLP/HTTP receiver on loopback, serves
``/metrics``, and logs one ``request_completed`` line per request; no secret leaks anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from telemetry_harness import (
    ANTHROPIC_API_KEY,
    OPENAI_API_KEY,
    GatewayProc,
    OTLPReceiver,
    start_gateway,
    value,
    wait_for,
)

from tollway.keys import mint_key
from tollway.testing import Simulator, start_simulator, stop

MESSAGES = [{"role": "user", "content": "hello telemetry"}]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
#: A well-formed key no gateway knows: it must not leak either.
UNKNOWN_KEY = mint_key("test")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gw(
    sim: Simulator, receiver: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProc]:
    g = start_gateway(
        tmp_path_factory.mktemp("telemetry-e2e"),
        sim.url,
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": receiver.url},  # no /v1/traces: it is appended
    )
    yield g
    stop(g.proc)


def test_streaming_span_is_the_callers_child_with_the_header_ids(
    gw: GatewayProc, receiver: OTLPReceiver
) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    chunks = list(raw.parse())
    usage = chunks[-1].usage
    assert usage is not None
    headers = raw.headers
    assert headers["x-langwatch-trace-id"] == TRACE_ID

    span = receiver.span_for(headers["x-langwatch-request-id"])
    assert span["path"] == "/v1/traces"
    assert span["trace_id"] == TRACE_ID
    assert span["parent_span_id"] == PARENT_ID
    assert span["span_id"] == headers["x-langwatch-span-id"]
    assert span["kind"] == 2  # SERVER
    assert span["name"] == "POST /v1/chat/completions"
    assert span["token"] == "tok-project-a"
    assert span["resource"]["service.name"] == "tollway-gateway"
    a = span["attributes"]
    assert a["langwatch.origin"] == "gateway"
    assert a["langwatch.project_id"] == "proj-a"
    assert a["langwatch.virtual_key_id"]
    assert a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == headers["x-langwatch-model"]
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens - (cached or 0)
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert a["gen_ai.usage.cache_read.input_tokens"] == (cached or 0)
    assert a["langwatch.stream.chunk_count"] >= len(chunks) - 1
    assert "langwatch.stream.terminated_at_chunk" not in a
    assert a["langwatch.fallback.count"] == 0
    assert a["http.response.status_code"] == 200
    assert "error.type" not in a
    assert span["status_code"] == 0  # unset
    assert span["end"] > span["start"]
    [event] = span["events"]
    assert event["name"] == "langwatch.provider_attempt"
    assert event["attributes"]["langwatch.attempt.outcome"] == "ok"


def test_upstream_500_sets_error_type_and_the_attempt_event(
    gw: GatewayProc, receiver: OTLPReceiver
) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        gw.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-simulator-fault": "500"},
        )
    span = receiver.span_for(info.value.response.headers["x-langwatch-request-id"])
    a = span["attributes"]
    assert a["error.type"] == "upstream_error"
    assert a["http.response.status_code"] == 500
    assert a["langwatch.fallback.count"] == 0  # one provider: no fallback taken
    assert span["status_code"] == 2  # ERROR
    [event] = span["events"]
    assert event["attributes"]["langwatch.attempt.outcome"] == "error"
    assert event["attributes"]["langwatch.fallback.reason"] == "http_500"
    assert event["attributes"]["http.response.status_code"] == 500
    assert span["start"] <= event["time"] <= span["end"]


def test_stream_cut_records_the_chunk_it_ended_at(gw: GatewayProc, receiver: OTLPReceiver) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        extra_headers={"x-simulator-fault": "midstream:3", "x-simulator-event-delay-ms": "20"},
    )
    with pytest.raises(openai.APIError):
        for _ in raw.parse():
            pass
    span = receiver.span_for(raw.headers["x-langwatch-request-id"])
    a = span["attributes"]
    assert a["langwatch.stream.terminated_at_chunk"] == 3
    assert a["langwatch.stream.chunk_count"] == 3
    assert a["error.type"] == "provider_error"
    assert span["status_code"] == 2
    assert "mid-stream" in span["status_message"] or "midstream" in span["status_message"]


def test_anthropic_usage_matches_the_response(gw: GatewayProc, receiver: OTLPReceiver) -> None:
    client = gw.anthropic(gw.secrets["b"])
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    message = raw.parse()
    span = receiver.span_for(raw.headers["x-langwatch-request-id"])
    a = span["attributes"]
    assert a["gen_ai.system"] == "anthropic"
    assert a["gen_ai.usage.input_tokens"] == message.usage.input_tokens
    assert a["gen_ai.usage.output_tokens"] == message.usage.output_tokens
    assert a["gen_ai.usage.cache_read.input_tokens"] == (message.usage.cache_read_input_tokens or 0)
    assert "langwatch.stream" not in a


def test_two_projects_export_with_their_own_tokens(gw: GatewayProc, receiver: OTLPReceiver) -> None:
    ids = {}
    for key in ("a", "b"):
        raw = gw.openai(key).chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        ids[key] = raw.headers["x-langwatch-request-id"]
    span_a, span_b = receiver.span_for(ids["a"]), receiver.span_for(ids["b"])
    assert (span_a["token"], span_a["attributes"]["langwatch.project_id"]) == (
        "tok-project-a",
        "proj-a",
    )
    assert (span_b["token"], span_b["attributes"]["langwatch.project_id"]) == (
        "tok-project-b",
        "proj-b",
    )


def test_unknown_key_is_traced_without_a_principal(gw: GatewayProc, receiver: OTLPReceiver) -> None:
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {UNKNOWN_KEY}"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        timeout=10,
    )
    assert response.status_code == 401
    span = receiver.span_for(response.headers["x-langwatch-request-id"])
    assert span["attributes"]["error.type"] == "invalid_api_key"
    assert "langwatch.virtual_key_id" not in span["attributes"]
    assert span["token"] is None


def test_metrics_move_by_the_expected_amounts(gw: GatewayProc) -> None:
    route = "/v1/chat/completions"
    scrape = httpx.get(f"{gw.url}/metrics", timeout=5)
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    before = gw.metrics_text()
    client = gw.openai()
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-simulator-fault": "500"},
        )

    def delta(text: str, name: str, **labels: str) -> float:
        return value(text, name, **labels) - value(before, name, **labels)

    def settled() -> str | None:
        text = gw.metrics_text()
        done = delta(text, "gateway_http_request_duration_seconds_count", route=route) >= 3
        return text if done else None

    after = wait_for(settled, 5, "account to record the three requests")
    assert delta(after, "gateway_http_requests_total", route=route, status="200") == 2
    assert delta(after, "gateway_http_requests_total", route=route, status="500") == 1
    assert delta(after, "gateway_http_request_duration_seconds_count", route=route) == 3
    ok = {"provider": "sim-openai", "outcome": "ok"}
    error = {"provider": "sim-openai", "outcome": "error"}
    assert delta(after, "gateway_provider_attempts_total", **ok) == 2
    assert delta(after, "gateway_provider_attempts_total", **error) == 1
    assert delta(after, "gateway_overhead_seconds_count") >= 3
    assert value(after, "gateway_overhead_seconds_sum") > 0
    assert delta(after, "gateway_fallback_events_total") == 0
    assert value(after, "gateway_in_flight_requests") == 0
    assert value(after, "gateway_streaming_active") == 0
    names = {f.name for f in text_string_to_metric_families(after)}
    assert {"gateway_otel_spans_dropped", "process_cpu_seconds"} <= names


def test_garbage_collector_pauses_are_on_metrics(gw: GatewayProc) -> None:
    """Every collection the gateway process runs while serving shows up as a pause, per
    generation (the core records them; this plugin exposes them)."""
    before = gw.metrics_text()
    for g in ("0", "1", "2"):  # every generation has its series from the start
        assert f'gateway_gc_pause_seconds_count{{generation="{g}"}}' in before
    client = gw.openai()
    for _ in range(20):  # each request allocates thousands of objects: young collections run
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]

    def counted() -> str | None:
        text = gw.metrics_text()
        young = value(text, "gateway_gc_pause_seconds_count", generation="0")
        return (
            text
            if young > value(before, "gateway_gc_pause_seconds_count", generation="0")
            else None
        )

    after = wait_for(counted, 5, "the young collections' pauses to be recorded")
    assert value(after, "gateway_gc_pause_seconds_sum", generation="0") > value(
        before, "gateway_gc_pause_seconds_sum", generation="0"
    )
    # Our count follows the collector's own (prometheus-client's python_gc_collections_total).
    ours = value(after, "gateway_gc_pause_seconds_count", generation="0")
    theirs = value(after, "python_gc_collections_total", generation="0")
    assert 0 < ours <= theirs


def test_one_request_completed_line_per_request(gw: GatewayProc, receiver: OTLPReceiver) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    rid = raw.headers["x-langwatch-request-id"]
    receiver.span_for(rid)

    def lines() -> list[dict[str, Any]]:
        out = []
        for line in gw.logs().splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("request_id") == rid and doc["msg"].startswith("request_completed"):
                    out.append(doc)
        return out

    [line] = wait_for(lines, 5, "the request_completed line")
    assert "status=200" in line["msg"] and "provider=openai" in line["msg"]
    assert line["logger"] == "tollway_telemetry"


def test_no_secret_in_logs_spans_or_metrics(
    gw: GatewayProc, receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """Runs last: scans everything the earlier tests produced, plus a few more requests."""
    client = gw.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    for _ in stream:
        pass
    raw = gw.openai("b").chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    receiver.span_for(raw.headers["x-langwatch-request-id"])

    texts = {
        "log": gw.logs(),
        "metrics": gw.metrics_text(),
        "spans": json.dumps(receiver.all_spans()),
    }
    secrets = [*gw.secrets.values(), UNKNOWN_KEY, OPENAI_API_KEY, ANTHROPIC_API_KEY]
    assert len(receiver.all_spans()) >= 10
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}…) appears in the {where}"
