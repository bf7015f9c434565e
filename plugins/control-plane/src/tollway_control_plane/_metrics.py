"""The control plane's Prometheus metrics: what becomes of the request spans it is given.

* ``control_plane_otel_batches_total{outcome}``: span batches, by outcome — ``accepted``, or the
  refusal (``invalid_token``, ``bad_request``, ``not_gateway_spans``, ``wrong_project``,
  ``payload_too_large``, ``unsupported_media_type``) or ``store_failed`` (the store could not
  write them).
* ``control_plane_otel_spans_total{outcome}``: spans, by outcome — ``stored``, ``duplicate``
  (already stored: an exporter retry), ``refused`` (in a refused batch), ``dropped`` (lost to a
  store failure).

The same counters count the standalone control plane's receiver (``/api/otel/v1/traces``,
exposed on its ``GET /metrics``) and the embedded default's in-process sink (exposed on the
gateway's ``/metrics`` by the telemetry plugin, which serves prometheus-client's default
registry).
"""

from __future__ import annotations

import logging
import threading

import prometheus_client

__all__ = ["BATCHES", "SPANS", "batch", "counter"]

log = logging.getLogger("tollway_control_plane")

_LOCK = threading.Lock()
_COUNTERS: dict[str, prometheus_client.Counter] = {}


def counter(name: str, documentation: str, labels: tuple[str, ...]) -> prometheus_client.Counter:
    """The counter called ``name`` (``…_total`` on ``/metrics``), created in prometheus-client's
    default registry on first use and the same object after. Public API only: if another
    library already registered that name, the counter still counts (for tests) but is not
    exported, and a warning says so."""
    with _LOCK:
        found = _COUNTERS.get(name)
        if found is None:
            try:
                found = prometheus_client.Counter(name, documentation, labels)
            except ValueError:
                log.warning("metric_name_taken name=%s: not exported on /metrics", name)
                found = prometheus_client.Counter(name, documentation, labels, registry=None)
            _COUNTERS[name] = found
        return found


BATCHES = counter(
    "control_plane_otel_batches",
    "Request span batches given to the control plane (OTLP receiver or embedded sink), by "
    "outcome: accepted, a refusal reason, or store_failed.",
    ("outcome",),
)
SPANS = counter(
    "control_plane_otel_spans",
    "Request spans given to the control plane, by outcome: stored, duplicate, refused, dropped.",
    ("outcome",),
)


def batch(outcome: str, *, stored: int = 0, duplicate: int = 0, other: int = 0) -> None:
    """Count one batch: ``stored``/``duplicate`` spans when accepted; ``other`` spans as
    ``refused`` (a refusal) or ``dropped`` (``store_failed``)."""
    BATCHES.labels(outcome).inc()
    if stored:
        SPANS.labels("stored").inc(stored)
    if duplicate:
        SPANS.labels("duplicate").inc(duplicate)
    if other:
        SPANS.labels("dropped" if outcome == "store_failed" else "refused").inc(other)
