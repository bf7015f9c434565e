"""Request spans in the store (SQLite and PostgreSQL): OTLP decoding (protobuf and JSON),
idempotent inserts, lookups and filters, retention and the size cap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from control_plane_helpers import PEPPER, pg_url, store_url  # noqa: F401 (fixtures)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tollway_control_plane.store import NotFound, Store, ValidationError
from tollway_control_plane.traces import (
    OtlpError,
    SpanStore,
    decode_otlp,
    get_request,
    list_requests,
)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    s = Store.open(store_url, PEPPER)
    try:
        yield s
    finally:
        s.close()


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=v)


def span(n: int, *, start_ns: int | None = None, **attributes: Any) -> Span:
    start = start_ns if start_ns is not None else time.time_ns()
    attrs = {
        "langwatch.gateway_request_id": f"grq_{n}",
        "gen_ai.request.model": "gpt-4o-mini",
        "http.response.status_code": 200,
        **attributes,
    }
    return Span(
        trace_id=n.to_bytes(16, "big"),
        span_id=n.to_bytes(8, "big"),
        name="POST /v1/chat/completions",
        start_time_unix_nano=start,
        end_time_unix_nano=start + 5_000_000,
        attributes=[KeyValue(key=k, value=_value(v)) for k, v in attrs.items()],
        events=[
            Span.Event(
                name="langwatch.provider_attempt",
                time_unix_nano=start + 4_000_000,
                attributes=[
                    KeyValue(key="langwatch.credential.id", value=_value("mp_1")),
                    KeyValue(key="langwatch.credential.name", value=_value("sim")),
                    KeyValue(key="langwatch.attempt.outcome", value=_value("ok")),
                ],
            )
        ],
    )


def body(*spans: Span) -> bytes:
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])]
    )
    return request.SerializeToString()


def test_store_lookup_and_filters(store: Store) -> None:
    spans = SpanStore(store.db)
    rows = decode_otlp(
        body(
            span(1, **{"langwatch.virtual_key_id": "vk_a", "langwatch.project_id": "p1"}),
            span(
                2,
                **{
                    "langwatch.virtual_key_id": "vk_b",
                    "http.response.status_code": 429,
                    "error.type": "rate_limit_exceeded",
                },
            ),
        )
    )
    assert spans.insert(rows) == 2
    assert spans.insert(rows) == 0  # the same spans again: skipped
    record = get_request(spans, "grq_1")
    assert record["virtual_key_id"] == "vk_a" and record["project_id"] == "p1"
    assert record["duration_ms"] == 5.0
    assert record["attempts"][0]["credential_name"] == "sim"
    with pytest.raises(NotFound, match="no request 'grq_9'"):
        get_request(spans, "grq_9")

    def ids(**filters: Any) -> list[str]:
        return [r["request_id"] for r in list_requests(spans, filters)]

    assert ids() == ["grq_2", "grq_1"] or ids() == ["grq_1", "grq_2"]
    assert ids(key="vk_a") == ["grq_1"]
    assert ids(project="p1") == ["grq_1"]
    assert ids(status="error") == ["grq_2"]
    assert ids(status="429") == ["grq_2"]
    assert ids(status="rate_limit_exceeded") == ["grq_2"]
    assert ids(status="ok") == ["grq_1"]
    assert ids(model="other") == []
    assert len(ids(limit="1")) == 1
    assert ids(since="1h") != []
    with pytest.raises(ValidationError, match="since"):
        ids(since="soon")
    with pytest.raises(ValidationError, match="limit"):
        ids(limit="0")
    with pytest.raises(ValidationError, match="unknown filter"):
        ids(colour="red")


def test_retention_and_size_cap(store: Store) -> None:
    old = time.time_ns() - 10 * 86400 * 10**9
    spans = SpanStore(store.db, retention_days=7, max_spans=3)
    spans.insert(decode_otlp(body(span(1, start_ns=old), *(span(n) for n in range(2, 7)))))
    left = [r["request_id"] for r in list_requests(spans, {})]
    assert sorted(left) == ["grq_4", "grq_5", "grq_6"]  # the old one, then the oldest past 3


def test_decoding_json_and_refusing_garbage() -> None:
    data = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "gw"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                                "spanId": "00f067aa0ba902b7",
                                "name": "POST /v1/chat/completions",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000005000000",
                                "attributes": [
                                    {
                                        "key": "langwatch.gateway_request_id",
                                        "value": {"stringValue": "grq_json"},
                                    },
                                    {"key": "n", "value": {"intValue": "3"}},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    [row] = decode_otlp(orjson.dumps(data), "application/json")
    assert row.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert row.span_id == "00f067aa0ba902b7"
    assert row.request_id == "grq_json"
    assert row.attributes["n"] == 3
    assert row.resource == {"service.name": "gw"}
    for bad, kind in [
        (b"\xff\xff\xff", "application/x-protobuf"),
        (b"{", "application/json"),
        (b"[]", "application/json"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "json"),
    ]:
        with pytest.raises(OtlpError):
            decode_otlp(bad, kind)


def test_guardrail_verdicts_are_read_from_the_span_attributes() -> None:
    from tollway_control_plane.traces import guardrail_verdicts

    attributes = {
        "langwatch.guardrail.pre.verdicts": "pii=allow,moderation=error,policy=block",
        "langwatch.guardrail.pre.decision": "block",
        "langwatch.guardrail.pre.blocked_by": "policy",
        "langwatch.guardrail.pre.reason": "the request asks for a forbidden topic",
        "langwatch.guardrail.pre_fail_open": "moderation: timeout: no verdict within 500 ms",
        "langwatch.guardrail.stream_chunk.decision": "block",
        "langwatch.guardrail.stream_chunk.blocked_by": "pii",
        "langwatch.guardrail.stream_chunk.reason": "the response contains personal data",
    }
    assert guardrail_verdicts(attributes) == [
        {"direction": "pre", "evaluator": "pii", "verdict": "allow", "reason": None},
        {
            "direction": "pre",
            "evaluator": "moderation",
            "verdict": "fail_open",
            "reason": "timeout: no verdict within 500 ms",
        },
        {
            "direction": "pre",
            "evaluator": "policy",
            "verdict": "block",
            "reason": "the request asks for a forbidden topic",
        },
        {
            "direction": "stream_chunk",
            "evaluator": "pii",
            "verdict": "block",
            "reason": "the response contains personal data",
        },
    ]
    assert guardrail_verdicts({}) == []
