"""What is exported is what the OpenTelemetry SDK would export.

The span ``Tracing.record`` builds directly is, once OTLP-encoded, byte for byte the span the
SDK's own tracer builds from the same request (``start_span`` with the core's ids,
``set_attributes``, ``add_event`` per attempt, ``set_status``, ``end``): same name, ids, parent,
times, attributes, events, status, resource and scope, and the same sampling decision, including
under the ``OTEL_SPAN_*`` / ``OTEL_*_ATTRIBUTE_*`` limits. And the plugin's encoder writes the
bytes the SDK's ``encode_spans`` writes."""

from __future__ import annotations

import asyncio
import string
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from telemetry_harness import OTLPReceiver

from tollway import Attempt, Principal, RequestContext, Usage, __version__
from tollway_telemetry import COST_USD, TelemetrySettings, Tracing, resolve, span_attributes
from tollway_telemetry._encode import _encode, encode
from tollway_telemetry._export import OTLPExporter
from tollway_telemetry._spans import attempt_events, span_name

RESOURCE = Resource({"service.name": "tollway-gateway", "service.version": "test"})


class _Ids(IdGenerator):
    def __init__(self) -> None:
        self.trace_id = self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return True


def reference_body(ctx: RequestContext, ratio: float) -> bytes | None:
    """The request's span built through the SDK's tracer, OTLP-encoded (None: not sampled)."""
    exporter = InMemorySpanExporter()
    ids = _Ids()
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(ratio)),
        resource=RESOURCE,
        shutdown_on_exit=False,
        id_generator=ids,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tollway_telemetry", __version__)
    trace_id, span_id = int(ctx.trace_id, 16), int(ctx.span_id, 16)
    parent = Context()
    if ctx.parent_span_id:
        remote = SpanContext(
            trace_id,
            int(ctx.parent_span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(ctx.trace_flags & 0xFF),
        )
        parent = set_span_in_context(NonRecordingSpan(remote), parent)
    ids.trace_id, ids.span_id = trace_id, span_id
    start = ctx.started_unix_ns
    span = tracer.start_span(span_name(ctx), context=parent, kind=SpanKind.SERVER, start_time=start)
    if not span.is_recording():
        return None
    span.set_attributes(span_attributes(ctx))
    for name, attributes, timestamp in attempt_events(ctx, start):
        span.add_event(name, attributes, timestamp)
    status = ctx.status or 0
    if ctx.error_type or status >= 500:
        description = ctx.error_message or ctx.error_type or f"HTTP {status}"
        span.set_status(Status(StatusCode.ERROR, description[:512]))
    assert ctx.finished is not None
    span.end(end_time=start + int(max(0.0, ctx.finished - ctx.started) * 1e9))
    return encode_spans(exporter.get_finished_spans()).SerializeToString()


class Sink:
    """An in-process span sink: every batch, as the exporter encoded it."""

    name = "equivalence"

    def __init__(self) -> None:
        self.batches: list[bytes] = []

    def export(self, body: bytes, auth_token: str | None) -> None:
        self.batches.append(body)


def recorded_body(tracing: Tracing, sink: Sink, ctx: RequestContext) -> bytes | None:
    sink.batches.clear()
    if not tracing.record(ctx):
        return None
    tracing.flush()
    [body] = sink.batches
    return body


def make_tracing(ratio: float = 1.0) -> tuple[Tracing, Sink]:
    sink = Sink()
    config = attrs.evolve(
        resolve(TelemetrySettings(sampler_arg=ratio), {}),
        export=True,
        endpoint_source="in-process",
    )
    return Tracing(config, lambda reason, n: None, resource=RESOURCE, span_sink=sink), sink


# --- requests ---------------------------------------------------------------------------------

HEX = "0123456789abcdef"
ULID = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
words = st.text(string.ascii_letters + string.digits + "_-. é", max_size=12)
values = st.one_of(
    words,
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
)
attempts = st.builds(
    Attempt,
    provider=st.sampled_from(["openai-a", "anthropic-b", "mp_01X"]),
    provider_type=st.sampled_from(["openai", "anthropic"]),
    model=words,
    outcome=st.sampled_from(["ok", "error", "skipped", "circuit_open"]),
    status=st.one_of(st.none(), st.sampled_from([200, 429, 500, 503])),
    reason=st.sampled_from(["", "http_500", "timeout", "rate_limit_exceeded"]),
    duration_s=st.floats(0, 5),
    breaker_state=st.sampled_from(["closed", "open", "half_open"]),
)
principals = st.one_of(
    st.none(),
    st.builds(
        Principal,
        key_id=st.just("vk_1"),
        display_prefix=st.just("lw_vk_live_01"),
        organization_id=st.sampled_from(["", "org_1"]),
        team_id=st.one_of(st.none(), st.just("team_1")),
        project_id=st.one_of(st.none(), st.just("proj_1")),
    ),
)


@st.composite
def contexts(draw: st.DrawFn) -> RequestContext:
    ctx = RequestContext(
        request_id="grq_" + draw(st.text(ULID, min_size=26, max_size=26)),
        endpoint=draw(st.sampled_from(["chat", "messages", "embeddings", "responses", ""])),
        method=draw(st.sampled_from(["POST", "GET"])),
        path=draw(st.sampled_from(["/v1/chat/completions", "/v1/messages", "/weird"])),
        query_string=b"",
        headers={},
        trace_id=draw(st.text(HEX, min_size=32, max_size=32).filter(lambda t: int(t, 16) != 0)),
        span_id=draw(st.text(HEX, min_size=16, max_size=16).filter(lambda t: int(t, 16) != 0)),
        model=draw(words),
        stream=draw(st.booleans()),
    )
    if draw(st.booleans()):
        ctx.parent_span_id = draw(st.text(HEX, min_size=16, max_size=16))
        ctx.trace_flags = draw(st.sampled_from([0, 1, 3]))
    ctx.principal = draw(principals)
    ctx.status = draw(st.one_of(st.none(), st.sampled_from([200, 400, 402, 429, 499, 500, 502])))
    ctx.error_type = draw(
        st.sampled_from(
            [None, "provider_error", "guardrail_blocked", "budget_exceeded", "rate_limit_exceeded"]
        )
    )
    ctx.error_message = draw(st.one_of(st.none(), st.text(max_size=600)))
    ctx.attempts = draw(st.lists(attempts, max_size=3))
    if ctx.attempts:
        last = ctx.attempts[-1]
        ctx.provider, ctx.provider_type = last.provider, last.provider_type
        ctx.resolved_model = last.model
        ctx.upstream_wait_s = sum(a.duration_s for a in ctx.attempts)
    if draw(st.booleans()):
        ctx.usage = Usage(*draw(st.lists(st.integers(0, 10**6), min_size=5, max_size=5)))
    ctx.stream_chunks = draw(st.integers(0, 50))
    ctx.terminated_at_chunk = draw(st.one_of(st.none(), st.integers(0, 50)))
    if ctx.stream and draw(st.booleans()):
        ctx.first_byte_at = ctx.started + draw(st.floats(0, 1))
    ctx.client_disconnected = draw(st.booleans())
    ctx.finished = ctx.started + draw(st.floats(0, 30))
    if draw(st.booleans()):
        ctx.stash[COST_USD] = draw(st.floats(0, 10))
    elif draw(st.booleans()):
        ctx.cost_micros = draw(st.integers(0, 10**7))
    ctx.span_attributes.update(draw(st.dictionaries(words, values, max_size=6)))
    for header in ("X-LangWatch-Cache", "x-langwatch-budget-warning"):
        if draw(st.booleans()):
            ctx.response_headers[header] = draw(words)
    return ctx


# --- the tests --------------------------------------------------------------------------------


def test_record_builds_the_span_the_sdk_tracer_builds() -> None:
    tracing, sink = make_tracing()

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(contexts())
    def check(ctx: RequestContext) -> None:
        assert recorded_body(tracing, sink, ctx) == reference_body(ctx, 1.0)

    try:
        check()
    finally:
        asyncio.run(tracing.shutdown(2))


def test_sampling_ratio_decides_like_the_sdk_tracer() -> None:
    tracing, sink = make_tracing(0.5)

    @settings(max_examples=40, deadline=None)
    @given(contexts())
    def check(ctx: RequestContext) -> None:
        assert recorded_body(tracing, sink, ctx) == reference_body(ctx, 0.5)

    try:
        check()
    finally:
        asyncio.run(tracing.shutdown(2))


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_SDK_DISABLED": "true"},  # no span: the provider's tracer is a no-op
        {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "5"},
        {"OTEL_ATTRIBUTE_COUNT_LIMIT": "3"},
        {"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "4"},
        {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "2"},
        {"OTEL_SPAN_EVENT_COUNT_LIMIT": "1"},
        {"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "2"},
    ],
)
def test_span_limits_apply_as_in_the_sdk(env: dict[str, str], monkeypatch: Any) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tracing, sink = make_tracing()
    try:
        ctx = RequestContext(
            request_id="grq_01LIMITS",
            endpoint="chat",
            method="POST",
            path="/v1/chat/completions",
            query_string=b"",
            headers={},
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            span_id="00f067aa0ba902b7",
            model="gpt-4o-mini",
        )
        ctx.status, ctx.finished = 200, ctx.started + 0.25
        ctx.attempts = [
            Attempt("prov-a", "openai", "gpt-4o", "error", 503, "http_503", 0.01, "open"),
            Attempt("prov-b", "anthropic", "claude-x", "ok", 200, "", 0.02),
        ]
        ctx.span_attributes[""] = "an empty name: dropped and counted, as the SDK does"
        ours = recorded_body(tracing, sink, ctx)
        assert (ours is None) == ("OTEL_SDK_DISABLED" in env)
        assert ours == reference_body(ctx, 1.0)
    finally:
        asyncio.run(tracing.shutdown(2))


# --- the encoder ------------------------------------------------------------------------------


def sdk_bytes(spans: list[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def test_encode_writes_what_the_sdk_encoder_writes() -> None:
    tracing, _ = make_tracing()
    other = Resource({"service.name": "other", "n": 3}, "https://schema/1")

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(contexts(), max_size=6), st.lists(st.integers(0, 3), max_size=6))
    def check(ctxs: list[RequestContext], mixes: list[int]) -> None:
        spans = [s for s in map(tracing.span_for, ctxs) if s is not None]
        # Interleave other resources and scopes: the SDK groups by resource, then scope.
        for span, mix in zip(spans, mixes, strict=False):
            if mix & 1:
                span._resource = other
            if mix & 2:
                span._instrumentation_scope = InstrumentationScope("other", None, "s://2")
        # The plugin's spans never need the fallback: _encode raises rather than fall back.
        assert _encode(spans).SerializeToString() == sdk_bytes(spans)

    try:
        check()
    finally:
        asyncio.run(tracing.shutdown(2))


def _span(**kw: Any) -> ReadableSpan:
    kw.setdefault(
        "context", SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False)
    )
    return ReadableSpan("GET /x", start_time=1, end_time=2, **kw)


@pytest.mark.parametrize(
    "span",
    [
        _span(),  # no resource given: the SDK's default one, scope None, status unset
        _span(attributes={"big": 2**70}),  # past int64: the SDK logs and skips it
        _span(attributes={"list": ("a", "b"), "b": b"x", "none": None}),
        _span(links=(Link(SpanContext(1, 2, True), {"k": "v"}),)),
        _span(
            context=SpanContext(
                1, 2, False, trace_state=TraceState([("vendor", "x"), ("other", "y")])
            ),
            status=Status(StatusCode.OK),
            kind=SpanKind.CLIENT,
            instrumentation_scope=InstrumentationScope("lib", "1.0", None, {"a": 1}),
        ),
    ],
)
def test_encode_falls_back_to_or_matches_the_sdk_encoder(span: ReadableSpan) -> None:
    assert encode([span]).SerializeToString() == sdk_bytes([span])
    assert encode([]).SerializeToString() == sdk_bytes([]) == b""


def test_the_otlp_exporter_posts_what_the_sdk_encoder_writes() -> None:
    """Over HTTP, with the SDK's exporter sending, the body is encode_spans' bytes, and it is
    encode() that wrote them (with the installed SDK: a version whose exporter lacks the client
    it needs would fall back to the exporter's own export)."""
    receiver = OTLPReceiver()
    config = resolve(
        TelemetrySettings(),
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "60000"},
    )
    tracing = Tracing(config, lambda reason, n: None, resource=RESOURCE)

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(contexts(), min_size=1, max_size=8))
    def check(ctxs: list[RequestContext]) -> None:
        receiver.requests.clear()
        spans = [s for s in map(tracing.span_for, ctxs) if s is not None]
        for ctx in ctxs:
            tracing.record(ctx)
        tracing.flush()
        if not spans:
            assert receiver.requests == []
            return
        [request] = receiver.requests
        assert request["spans"] == len(spans)
        assert request["body"] == encode_spans(spans).SerializePartialToString()

    try:
        exporter = tracing.sink_for(None).exporter._inner
        assert isinstance(exporter, OTLPExporter)
        assert exporter.fast
        check()
    finally:
        asyncio.run(tracing.shutdown(2))
        receiver.close()
