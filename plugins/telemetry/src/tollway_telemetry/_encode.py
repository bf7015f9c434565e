"""The OTLP protobuf of a batch of spans: the SDK's ``encode_spans``, written in place.

The SDK's encoder builds each attribute as a ``KeyValue`` holding an ``AnyValue``, then passes
them to the span's constructor, the spans to their ``ScopeSpans``, those to their
``ResourceSpans`` and those to the request; a message passed to a constructor is copied, so
every attribute is built once and copied four times. Here each field is written once, into the
request itself (``add()`` on the repeated fields). The message is the same, field for field and
in the same order (spans grouped by resource, then by instrumentation scope, in first-seen
order), so it serializes to the same bytes; the tests compare the two.

A batch with something this encoder does not write (a link, an attribute value other than a
``str``, ``bool``, ``int`` or ``float``, a value the protobuf refuses) is encoded by the SDK's
``encode_spans`` instead, which has its own rules for those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PB2Span
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

__all__ = ["encode"]

_KINDS = {
    SpanKind.INTERNAL: PB2Span.SpanKind.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: PB2Span.SpanKind.SPAN_KIND_SERVER,
    SpanKind.CLIENT: PB2Span.SpanKind.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: PB2Span.SpanKind.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: PB2Span.SpanKind.SPAN_KIND_CONSUMER,
}
_LOCAL = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_REMOTE = _LOCAL | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


class _Unsupported(Exception):
    """Something only the SDK's encoder writes."""


def encode(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """``encode_spans(spans)``, the same message, built without copies."""
    try:
        return _encode(spans)
    except Exception:  # _Unsupported, or a value the protobuf refused (an int past int64)
        return encode_spans(spans)


def _encode(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resources: dict[Resource, tuple[Any, dict[InstrumentationScope | None, Any]]] = {}
    for span in spans:
        resource = span.resource
        entry = resources.get(resource)
        if entry is None:
            resource_spans = request.resource_spans.add()
            resource_spans.resource.SetInParent()
            _put(resource_spans.resource.attributes, resource.attributes)
            if resource.schema_url:
                resource_spans.schema_url = resource.schema_url
            entry = resources[resource] = (resource_spans, {})
        scope = span.instrumentation_scope or None
        scopes = entry[1]
        scope_spans = scopes.get(scope)
        if scope_spans is None:
            scope_spans = scopes[scope] = entry[0].scope_spans.add()
            pb_scope = scope_spans.scope
            pb_scope.SetInParent()
            if scope is not None:
                if scope.name:
                    pb_scope.name = scope.name
                if scope.version:
                    pb_scope.version = scope.version
                if scope.attributes:
                    _put(pb_scope.attributes, scope.attributes)
                if scope.schema_url:
                    scope_spans.schema_url = scope.schema_url
        _span(scope_spans.spans.add(), span)
    return request


def _span(out: Any, span: ReadableSpan) -> None:
    if span.links:
        raise _Unsupported("links")
    context = span.get_span_context()
    if context is None:
        raise _Unsupported("no span context")
    out.trace_id = context.trace_id.to_bytes(16, "big")
    out.span_id = context.span_id.to_bytes(8, "big")
    trace_state = context.trace_state
    if trace_state:
        out.trace_state = ",".join(f"{key}={value}" for key, value in trace_state.items())
    parent = span.parent
    if parent is not None:
        out.parent_span_id = parent.span_id.to_bytes(8, "big")
    out.name = span.name
    out.kind = _KINDS[span.kind]
    if span.start_time:
        out.start_time_unix_nano = span.start_time
    if span.end_time:
        out.end_time_unix_nano = span.end_time
    _put(out.attributes, span.attributes)
    events = out.events
    for event in span.events:
        pb_event = events.add()
        pb_event.time_unix_nano = event.timestamp
        pb_event.name = event.name
        if event.attributes:
            _put(pb_event.attributes, event.attributes)
        if event.dropped_attributes:
            pb_event.dropped_attributes_count = event.dropped_attributes
    status = span.status
    pb_status = out.status
    pb_status.SetInParent()
    if status.status_code.value:
        pb_status.code = status.status_code.value
    if status.description:
        pb_status.message = status.description
    if span.dropped_attributes:
        out.dropped_attributes_count = span.dropped_attributes
    if span.dropped_events:
        out.dropped_events_count = span.dropped_events
    out.flags = _REMOTE if parent is not None and parent.is_remote else _LOCAL


def _put(out: Any, attributes: Mapping[str, Any] | None) -> None:
    if not attributes:
        return
    add = out.add
    for key, value in attributes.items():
        kind = type(value)
        pair = add()
        pair.key = key
        if kind is str:
            pair.value.string_value = value
        elif kind is int:
            pair.value.int_value = value
        elif kind is float:
            pair.value.double_value = value
        elif kind is bool:
            pair.value.bool_value = value
        else:
            raise _Unsupported(f"attribute value of type {kind.__name__}")
