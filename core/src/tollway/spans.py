"""In-process span sinks: where a gateway's own request spans go when no OTLP endpoint is set.

The embedded default (``tollway serve``, one process) has no collector to export to, yet its
control plane can keep the spans itself. Two plugins meet here without importing each other:

* a plugin that can *store* spans (the control plane, when this gateway serves its own) offers a
  :class:`SpanSink` from the :func:`~tollway.hookspecs.register_span_sinks` hook;
* a plugin that *produces* spans (telemetry) asks :func:`span_sinks` for them at start-up and,
  when no OTLP endpoint is configured, hands each batch to the first one.

The unit of exchange is what an OTLP/HTTP exporter would have sent: one protobuf-encoded
``ExportTraceServiceRequest`` (``opentelemetry.proto.collector.trace.v1``). A sink therefore
decodes exactly what a remote OTLP receiver decodes, and the core needs no OpenTelemetry
package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tollway._context import StashKey
from tollway._registry import collect

if TYPE_CHECKING:
    from tollway.gateway import Gateway

__all__ = ["OTLP_PROTOBUF", "SpanSink", "span_sinks"]

#: The content type of the body a :class:`SpanSink` receives.
OTLP_PROTOBUF = "application/x-protobuf"

_SINKS: StashKey[list[SpanSink]] = StashKey("tollway.span_sinks")


@runtime_checkable
class SpanSink(Protocol):
    """A destination for a gateway's own spans, inside the gateway process."""

    #: Shown in the telemetry start-up log line (``endpoint=in-process:<name>``).
    name: str

    def export(self, body: bytes, auth_token: str | None) -> None:
        """Take one batch: ``body`` is a protobuf ``ExportTraceServiceRequest``; ``auth_token``
        is the ``X-Auth-Token`` an OTLP exporter would have sent for it (the key bundle's
        per-project token, or ``None``).

        Called on the span producer's worker thread, never on the event loop, one batch at a
        time per producer queue. It may block for one short write; it must not wait on the
        event loop. Raise to report the batch lost (the producer counts it as dropped).
        """
        ...


def span_sinks(gateway: Gateway) -> list[SpanSink]:
    """The sinks installed plugins offer through ``register_span_sinks``, in hook call order.

    Collected on first use and kept on ``gateway.stash``: call it from ``gateway_started`` or
    later. An object that does not look like a :class:`SpanSink` stops start-up naming it.
    """
    return collect(
        gateway,
        _SINKS,
        "register_span_sinks",
        SpanSink,
        "a 'name' and an 'export(body, auth_token)' method",
    )
