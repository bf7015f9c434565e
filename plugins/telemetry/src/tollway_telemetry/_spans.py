"""One span per request, built in ``account`` and exported with the OTLP/HTTP exporter.

Nothing here runs on the request path. The core already chose the trace id, the span id and the
caller's parent span id (they are in the response headers), and measured the timings; ``account``
turns that record into a span *after the response is complete*:

* :meth:`Tracing.record` builds the finished span directly as the SDK's
  :class:`~opentelemetry.sdk.trace.ReadableSpan` (what the tracer hands its span processors on
  ``end()``): the span id is the ``X-LangWatch-Span-Id`` the client saw and the trace id is
  ``X-LangWatch-Trace-Id`` (the caller's, with a ``traceparent``; its span is the parent).
  Sampling is the SDK's ``ParentBased(TraceIdRatioBased)`` sampler, asked the way the tracer
  asks it; the ``OTEL_SPAN_*`` / ``OTEL_ATTRIBUTE_*`` limits are applied as the SDK's span
  applies them. What the tracer machinery would add per span (a lock, a mutable span, bounded
  attribute containers, a context for the ids) is skipped when it would change nothing.
* Start and end times are explicit (``ctx.started_unix_ns`` and the perf-counter duration).
* The span goes to the :class:`Sink` of the request's OTLP token. A sink is one exporter (with
  its ``X-Auth-Token``) plus one :class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor`
  with a bounded queue, whose worker thread encodes and does the HTTP. Sinks are kept in a small
  LRU keyed by token (see :mod:`tollway_telemetry._export`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.util.types import Attributes

from tollway import RequestContext, StashKey, __version__
from tollway.spans import SpanSink
from tollway_telemetry._export import EXPORTER_LOGGERS, SILENCE, ExportHealth, Sink
from tollway_telemetry._metrics import overhead_seconds, route_label
from tollway_telemetry._settings import TelemetryConfig, redact_url

__all__ = [
    "COST_USD",
    "Tracing",
    "attempt_events",
    "span_attributes",
    "span_name",
    "token_for",
]

log = logging.getLogger("tollway_telemetry")

AttrValue = str | bool | int | float
_ATTR_TYPES = (str, bool, int, float)

#: Well-known per-request stash key: the request's cost in USD, exported as
#: ``langwatch.cost_usd``. Set it in ``ctx.stash`` before this plugin's ``account`` runs (it is
#: ``trylast``). Note that only code that imports ``tollway_telemetry`` can reach it.
COST_USD: StashKey[float] = StashKey("telemetry.cost_usd")

#: The key bundle field carrying a project's OTLP token (``Principal.extras``).
TOKEN_EXTRA = "otel_auth_token"

_OPERATIONS = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "embeddings": "embeddings",
    "gemini": "generate_content",
}
_EVENT = "langwatch.provider_attempt"
_MAX_DESCRIPTION = 512
_MAX_BATCH = 512  # the SDK's default OTEL_BSP_MAX_EXPORT_BATCH_SIZE

# --- what a span says ------------------------------------------------------------------------


def span_name(ctx: RequestContext) -> str:
    """``POST /v1/chat/completions`` (method and route, bounded cardinality)."""
    return f"{ctx.method} {route_label(ctx.path)}"


def _header(ctx: RequestContext, name: str) -> str | None:
    headers = ctx.response_headers
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None


def span_attributes(ctx: RequestContext) -> dict[str, AttrValue]:
    """The span's attributes (SPEC §7). Never a secret: the key's id and project, not its value;
    no request or response header or body is copied."""
    a: dict[str, AttrValue] = {
        "langwatch.origin": "gateway",
        "langwatch.gateway_request_id": ctx.request_id,
        "http.request.method": ctx.method,
        "http.route": route_label(ctx.path),
    }
    if ctx.endpoint:
        a["langwatch.endpoint"] = ctx.endpoint
    operation = _OPERATIONS.get(ctx.endpoint)
    if operation:
        a["gen_ai.operation.name"] = operation
    principal = ctx.principal
    if principal is not None:
        a["langwatch.virtual_key_id"] = principal.key_id
        if principal.project_id:
            a["langwatch.project_id"] = principal.project_id
        if principal.team_id:
            a["langwatch.team_id"] = principal.team_id
        if principal.organization_id:
            a["langwatch.organization_id"] = principal.organization_id
    status = ctx.status
    if status is not None:
        a["http.response.status_code"] = status
    if ctx.model:
        a["gen_ai.request.model"] = ctx.model
    if ctx.provider_type:
        a["gen_ai.system"] = ctx.provider_type
    if ctx.provider:
        a["langwatch.provider"] = ctx.provider
    if ctx.resolved_model:
        a["gen_ai.response.model"] = ctx.resolved_model
    usage = ctx.usage
    if usage is not None:
        a["gen_ai.usage.input_tokens"] = usage.input_tokens
        a["gen_ai.usage.output_tokens"] = usage.output_tokens
        a["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_input_tokens
        a["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_creation_input_tokens
        if usage.reasoning_tokens:
            a["langwatch.usage.reasoning_tokens"] = usage.reasoning_tokens
    cost = ctx.stash.get(COST_USD)
    if cost is None and ctx.cost_micros is not None:
        cost = ctx.cost_micros / 1_000_000
    if cost is not None:
        a["langwatch.cost_usd"] = float(cost)
    if ctx.attempts:
        a["langwatch.fallback.count"] = ctx.fallback_count
        a["langwatch.attempt.count"] = len(ctx.attempts)
        a["langwatch.upstream.duration_ms"] = round(ctx.upstream_wait_s * 1000, 3)
    if ctx.stream:
        a["langwatch.stream"] = True
        a["langwatch.stream.chunk_count"] = ctx.stream_chunks
        if ctx.terminated_at_chunk is not None:
            a["langwatch.stream.terminated_at_chunk"] = ctx.terminated_at_chunk
        if ctx.first_byte_at is not None:
            a["langwatch.stream.first_chunk_ms"] = round(
                (ctx.first_byte_at - ctx.started) * 1000, 3
            )
    if ctx.client_disconnected:
        a["langwatch.client_disconnected"] = True
    error_type = ctx.error_type
    if error_type:
        a["error.type"] = error_type
    elif status is not None and status >= 500:
        a["error.type"] = str(status)
    overhead = overhead_seconds(ctx)
    if overhead is not None:
        a["langwatch.gateway.overhead_ms"] = round(overhead * 1000, 3)
    # What plugins put on the context for the span (langwatch.guardrail.*, budget, cache, …).
    for name, value in ctx.span_attributes.items():
        if isinstance(value, _ATTR_TYPES):
            a[name] = value

    # What other plugins left on the response headers, and what the outcome implies.
    cache = _header(ctx, "X-LangWatch-Cache")
    if cache:
        a["langwatch.cache.outcome"] = cache.lower()
    warning = _header(ctx, "X-LangWatch-Budget-Warning")
    if error_type == "budget_exceeded":
        a["langwatch.budget.decision"] = "block"
    elif warning:
        a["langwatch.budget.decision"] = "warn"
    if warning:
        a["langwatch.budget.warning"] = warning
    if error_type == "guardrail_blocked":
        a["langwatch.guardrail.decision"] = "block"
        if ctx.stream and ctx.terminated_at_chunk is not None:
            direction = "stream_chunk"
        elif ctx.answered_by is not None or any(x.outcome == "ok" for x in ctx.attempts):
            direction = "post"  # an answer existed (a provider's, or a plugin's via `answer`)
        else:
            direction = "pre"
        a["langwatch.guardrail.direction"] = direction
    if error_type == "rate_limit_exceeded":
        dimension = _header(ctx, "X-LangWatch-RateLimit-Dimension")
        if dimension:
            a["langwatch.rate_limit.dimension"] = dimension
    return a


def attempt_events(
    ctx: RequestContext, start_ns: int
) -> list[tuple[str, dict[str, AttrValue], int]]:
    """One ``langwatch.provider_attempt`` event per provider attempt, with
    ``langwatch.fallback.reason`` on every attempt that did not answer. Timestamps are the end
    of each attempt, counted from the span start (attempts run one after another; the time
    spent before dispatch is not known, so they are slightly early)."""
    out: list[tuple[str, dict[str, AttrValue], int]] = []
    elapsed = 0.0
    instances = ctx.gateway.instances if ctx.gateway is not None else {}
    for i, attempt in enumerate(ctx.attempts):
        elapsed += attempt.duration_s
        attrs: dict[str, AttrValue] = {
            "langwatch.attempt.index": i,
            "langwatch.provider": attempt.provider,
            "gen_ai.system": attempt.provider_type,
            "gen_ai.request.model": attempt.model,
            "langwatch.attempt.outcome": attempt.outcome,
            "langwatch.attempt.duration_ms": round(attempt.duration_s * 1000, 3),
            "langwatch.circuit_breaker.state": attempt.breaker_state,
        }
        # The credential: its stable id (the store's ``mp_…``, or the configured name) and the
        # name an operator gave it. Never its secret.
        instance = instances.get(attempt.provider)
        attrs["langwatch.credential.id"] = attempt.provider
        if instance is not None:
            attrs["langwatch.credential.name"] = instance.config.name
        if attempt.status is not None:
            attrs["http.response.status_code"] = attempt.status
        if attempt.outcome != "ok":
            attrs["langwatch.fallback.reason"] = attempt.reason or attempt.outcome
        out.append((_EVENT, attrs, start_ns + int(elapsed * 1e9)))
    return out


def token_for(ctx: RequestContext, static_token: str | None) -> str | None:
    """The ``X-Auth-Token`` for this request's span: the static override, else the key
    bundle's ``otel_auth_token``, else none."""
    if static_token:
        return static_token
    principal = ctx.principal
    if principal is None:
        return None
    token = principal.extras.get(TOKEN_EXTRA)
    return token if isinstance(token, str) and token else None


class _HashedResource(Resource):
    """A resource that hashes once. The OTLP encoder groups every span of a batch by resource,
    and :class:`Resource` hashes by JSON-dumping its attributes each time."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


#: The context a root span's sampler is given (an empty one, never the ambient context).
_ROOT = Context()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)


def default_resource() -> Resource:
    """``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` as the SDK reads them; the service
    name defaults to ``tollway-gateway``."""
    resource = Resource.create({"service.version": __version__})
    name = str(resource.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "tollway-gateway"}))
    return resource


def _env_batch_size() -> int:
    """``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` as the SDK reads it: a positive integer, else 512."""
    raw = os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else _MAX_BATCH


class Tracing:
    """The span pipeline of one gateway."""

    def __init__(
        self,
        config: TelemetryConfig,
        on_drop: Callable[[str, int], None],
        *,
        resource: Resource | None = None,
        batch_size: int | None = None,
        span_sink: SpanSink | None = None,
    ) -> None:
        self.config = config
        self._on_drop = on_drop
        #: Spans per export (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, 512), capped at the queue size.
        self._batch_size = batch_size or _env_batch_size()
        #: Set: spans go to this in-process sink instead of an OTLP endpoint.
        self.span_sink = span_sink
        if span_sink is not None:
            shown = f"in-process:{span_sink.name}"
        elif config.endpoint:
            shown = redact_url(config.endpoint)
        else:
            shown = "OTEL_EXPORTER_OTLP_*"
        self.health = ExportHealth(
            config.startup_grace_seconds, config.warn_interval_seconds, shown
        )
        self._sampler = ParentBased(TraceIdRatioBased(config.sampler_arg))
        #: The resource of every span (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``).
        self.resource: Resource = _HashedResource(resource or default_resource())
        self._scope = InstrumentationScope("tollway_telemetry", __version__)
        #: ``OTEL_SPAN_*`` / ``OTEL_ATTRIBUTE_*``, read once as the tracer provider reads them.
        self.limits = SpanLimits()
        #: ``OTEL_SDK_DISABLED=true``: no span at all (the tracer provider's tracer is a no-op).
        self.disabled = os.environ.get(OTEL_SDK_DISABLED, "").lower().strip() == "true"
        self._sinks: collections.OrderedDict[str | None, Sink] = collections.OrderedDict()
        self._closed = False
        for name in EXPORTER_LOGGERS:
            logging.getLogger(name).addFilter(SILENCE)  # idempotent

    @property
    def sinks(self) -> dict[str | None, Sink]:
        return dict(self._sinks)

    def sink_for(self, token: str | None) -> Sink:
        """The sink for ``token`` (created on first use; the least recently used one is closed
        in the background when there are more than ``max_exporters``)."""
        sinks = self._sinks
        sink = sinks.get(token)
        if sink is not None:
            sinks.move_to_end(token)
            return sink
        sink = Sink(
            token, self.config, self.health, self._on_drop, self._batch_size, self.span_sink
        )
        sinks[token] = sink
        while len(sinks) > self.config.max_exporters:
            _, old = sinks.popitem(last=False)
            threading.Thread(
                target=old.shutdown, name="tollway-telemetry-evict", daemon=True
            ).start()
        return sink

    def record(self, ctx: RequestContext) -> bool:
        """Build the span of a finished request and queue it. True when it was sampled."""
        if self._closed:
            return False
        span = self.span_for(ctx)
        if span is None:
            return False
        self.sink_for(token_for(ctx, self.config.static_token)).submit(span)
        return True

    def span_for(self, ctx: RequestContext) -> ReadableSpan | None:
        """The finished span of a request, as the SDK's tracer would hand it to its span
        processors on ``end()``; None when it is not sampled (or its ids are not hex)."""
        if self.disabled:
            return None
        try:
            trace_id = int(ctx.trace_id, 16)
            span_id = int(ctx.span_id, 16)
            parent_id = int(ctx.parent_span_id, 16) if ctx.parent_span_id else 0
        except ValueError:
            return None
        name = span_name(ctx)
        parent: SpanContext | None = None
        context = _ROOT
        if parent_id:
            remote = SpanContext(
                trace_id, parent_id, is_remote=True, trace_flags=TraceFlags(ctx.trace_flags & 0xFF)
            )
            if remote.is_valid:
                parent = remote
                context = set_span_in_context(NonRecordingSpan(remote), _ROOT)
        sampling = self._sampler.should_sample(context, trace_id, name, SpanKind.SERVER)
        decision = sampling.decision
        if decision is Decision.DROP:
            return None
        start = ctx.started_unix_ns
        status = _UNSET
        code = ctx.status or 0
        if ctx.error_type or code >= 500:
            description = ctx.error_message or ctx.error_type or f"HTTP {code}"
            status = Status(StatusCode.ERROR, description[:_MAX_DESCRIPTION])
        if ctx.finished is not None:
            end = start + int(max(0.0, ctx.finished - ctx.started) * 1e9)
        else:
            end = time.time_ns()
        return ReadableSpan(
            name,
            context=SpanContext(
                trace_id,
                span_id,
                is_remote=False,
                trace_flags=_SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _NOT_SAMPLED,
                trace_state=sampling.trace_state,
            ),
            parent=parent,
            resource=self.resource,
            attributes=self._attributes(sampling.attributes, span_attributes(ctx)),
            events=self._events(attempt_events(ctx, start)),
            kind=SpanKind.SERVER,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope,
        )

    def _attributes(self, sampled: Attributes, attributes: dict[str, AttrValue]) -> Attributes:
        """The span's attributes as the SDK's span would keep them: the sampler's, then ours,
        within ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` (oldest dropped and counted) and
        ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``. The dict itself when that changes nothing."""
        limits = self.limits
        most = limits.max_span_attributes
        if (
            not sampled
            and limits.max_span_attribute_length is None
            and (most is None or len(attributes) <= most)
            and "" not in attributes
        ):
            return attributes
        bounded = BoundedAttributes(
            most, sampled, immutable=False, max_value_len=limits.max_span_attribute_length
        )
        for key, value in attributes.items():
            bounded[key] = value
        return bounded

    def _events(self, events: list[tuple[str, dict[str, AttrValue], int]]) -> Sequence[Event]:
        """The attempt events as the SDK's ``Span.add_event`` would keep them (within
        ``OTEL_SPAN_EVENT_COUNT_LIMIT`` and ``OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT``)."""
        if not events:
            return ()
        limits = self.limits
        most = limits.max_event_attributes
        if (
            limits.max_attribute_length is None
            and (limits.max_events is None or len(events) <= limits.max_events)
            and (most is None or all(len(attrs) <= most for _, attrs, _ in events))
        ):
            return tuple(Event(name, attrs, timestamp) for name, attrs, timestamp in events)
        kept: BoundedList[Event] = BoundedList(limits.max_events)
        for name, attrs, timestamp in events:
            bounded = BoundedAttributes(
                most, attrs, max_value_len=limits.max_attribute_length, immutable=True
            )
            kept.append(Event(name, bounded, timestamp))
        return kept

    def flush(self, timeout_s: float = 10.0) -> None:
        """Export everything queued now (blocking; for tests and ``tollway`` commands)."""
        for sink in list(self._sinks.values()):
            sink.processor.force_flush(int(timeout_s * 1000))

    async def shutdown(self, timeout_s: float) -> None:
        """Flush and close every sink, waiting at most ``timeout_s``; past that, stop retrying
        and return (the worker threads are daemons)."""
        self._closed = True
        sinks = list(self._sinks.values())
        self._sinks.clear()
        if sinks:
            loop = asyncio.get_running_loop()
            waiters = [_in_thread(loop, sink.shutdown) for sink in sinks]
            _, pending = await asyncio.wait(waiters, timeout=timeout_s)
            if pending:
                log.warning(
                    "otel_shutdown_timeout unfinished_exporters=%d timeout_s=%s",
                    len(pending),
                    timeout_s,
                )
                for sink in sinks:
                    sink.abort()


def _in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> asyncio.Future[None]:
    """Run ``fn`` in a daemon thread (unlike the default executor, it never delays exit)."""
    future: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            fn()
        finally:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the loop is gone: nobody waits any more
                pass

    threading.Thread(target=run, name="tollway-telemetry-shutdown", daemon=True).start()
    return future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
