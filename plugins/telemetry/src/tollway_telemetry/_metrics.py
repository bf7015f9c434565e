"""Prometheus metrics (SPEC §7), observed in ``account`` and exposed at ``GET /metrics``.

Each gateway gets its own :class:`~prometheus_client.CollectorRegistry` for the metrics this
plugin records, so several gateways in one process (tests) never collide. The exposition also
includes prometheus-client's default ``REGISTRY``: that is where other plugins register the SPEC
metrics they record themselves (plugins do not import each other), together with the client's
process and platform collectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tollway import RequestContext
from tollway.metrics import exposition, multiprocess

if TYPE_CHECKING:
    from tollway.gateway import Gateway

__all__ = [
    "OTHER_PLUGIN_METRICS",
    "RECORDED_METRICS",
    "GatewayMetrics",
    "fallback_events",
    "overhead_seconds",
    "route_label",
]

_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/models",
    }
)

#: Request durations: LLM calls run from milliseconds to minutes.
_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
#: Gateway overhead: the budget is about a millisecond (PERF.md).
_OVERHEAD_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

#: Metric families this plugin records (exposition names; counters carry ``_total``).
RECORDED_METRICS: tuple[str, ...] = (
    "gateway_http_requests_total",
    "gateway_http_request_duration_seconds",
    "gateway_provider_attempts_total",
    "gateway_fallback_events_total",
    "gateway_in_flight_requests",
    "gateway_streaming_active",
    "gateway_overhead_seconds",
    "gateway_otel_spans_dropped_total",
    "gateway_circuit_breaker_state",
    "gateway_circuit_breaker_opens_total",
)

#: SPEC §7 metrics other plugins record in prometheus-client's default registry, with the
#: labels they should use. This plugin exposes them; it does not define them.
OTHER_PLUGIN_METRICS: dict[str, tuple[str, ...]] = {
    "gateway_rate_limit_denied_total": ("dimension",),
    "gateway_budget_blocks_total": ("scope",),
    "gateway_guardrail_verdicts_total": ("direction", "verdict", "cause"),
    "gateway_cache_hits_total": ("outcome",),
    "gateway_auth_cache_hits_total": ("tier",),
    "gateway_redis_round_trips_total": ("path",),
    "gateway_gc_pause_seconds": ("generation",),
    "gateway_event_loop_lag_seconds": (),
}


def route_label(path: str) -> str:
    """The ``route`` label: the endpoint path, or ``other`` (bounded cardinality)."""
    return path if path in _ROUTES else "other"


def overhead_seconds(ctx: RequestContext) -> float | None:
    """Time spent in the gateway itself, excluding the wait for upstreams.

    Non-streaming: ``finished - started - upstream_wait_s``. Streaming: up to the first byte
    relayed to the client, ``first_byte_at - started - upstream_wait_s`` (the stream's own
    duration is the upstream's). None when the request has not finished. Never negative.
    """
    end = ctx.first_byte_at if ctx.stream and ctx.first_byte_at is not None else ctx.finished
    if end is None:
        return None
    return max(0.0, end - ctx.started - ctx.upstream_wait_s)


def fallback_events(ctx: RequestContext) -> int:
    """Moves to the next provider of the chain: every attempt after the first, whatever ended
    the previous one (an error, or a skip by a breaker or a provider rate limit)."""
    return max(0, len(ctx.attempts) - 1)


class GatewayMetrics:
    """The metrics of one gateway, in their own registry."""

    def __init__(self, gateway: Gateway | None = None) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests",
            "Requests served, by route and HTTP status.",
            ["route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Request duration from arrival to the end of the response (streams included).",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "gateway_provider_attempts",
            "Provider attempts of the fallback chain, by provider and outcome (ok, error, "
            "skipped).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "gateway_fallback_events",
            "Moves to the next provider of a fallback chain.",
            registry=registry,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time spent in the gateway excluding the upstream wait (streams: up to the first "
            "byte).",
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        # livesum: with several workers, the sum over the running ones.
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Requests being handled right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.streaming = Gauge(
            "gateway_streaming_active",
            "Streaming responses being relayed right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spans_dropped = Counter(
            "gateway_otel_spans_dropped",
            "Spans lost before reaching the OTLP endpoint: queue_full (the bounded export queue "
            "overflowed) or export_failed (the endpoint refused or could not be reached).",
            ["reason"],
            registry=registry,
        )
        self._gateway = gateway
        #: The labelled series :meth:`observe` feeds, by metric and label values: looked up
        #: in a dict rather than through ``labels()`` (which checks and converts the values
        #: and takes a lock) per request. As many as the series themselves: routes, statuses,
        #: providers and outcomes.
        self._children: dict[tuple[Any, ...], Any] = {}
        #: With several workers the gauges are set (every second and at each scrape) instead of
        #: read at scrape time, since any worker's scrape reports all of them.
        self.shared = multiprocess()
        if gateway is not None and not self.shared:
            self.in_flight.set_function(lambda: gateway.in_flight)
            self.streaming.set_function(lambda: gateway.streaming_active)
            registry.register(_Breakers(gateway))

    def refresh_gauges(self) -> None:
        """Write this worker's in-flight and streaming counts (several workers only)."""
        gateway = self._gateway
        if self.shared and gateway is not None:
            self.in_flight.set(gateway.in_flight)
            self.streaming.set(gateway.streaming_active)

    def observe(self, ctx: RequestContext) -> None:
        """Record one finished request (called from ``account``)."""
        route = route_label(ctx.path)
        self._series(self.requests, route, str(ctx.status or 0)).inc()
        if ctx.finished is not None:
            self._series(self.duration, route).observe(max(0.0, ctx.finished - ctx.started))
        overhead = overhead_seconds(ctx)
        if overhead is not None:
            self.overhead.observe(overhead)
        for attempt in ctx.attempts:
            self._series(self.attempts, attempt.provider, attempt.outcome).inc()
        moves = fallback_events(ctx)
        if moves:
            self.fallbacks.inc(moves)

    def _series(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up in a dict after the first time."""
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def exposition(self) -> bytes:
        """The text exposition: the default registry (other plugins, process), then ours; with
        several workers, every worker's (:func:`tollway.metrics.exposition`)."""
        self.refresh_gauges()
        return exposition(self.registry)


_BREAKER_STATES = ("closed", "open", "half_open")


class _Breakers(Collector):
    """The providers' circuit breakers, read at scrape time: one ``state`` series per provider
    and state (1 for the current one), and how often each opened."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.gateway.breakers)

    def _families(self, breakers: dict[str, Any]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "gateway_circuit_breaker_state",
            "Each provider's circuit breaker in this process: 1 for its current state "
            "(closed, open, half_open), 0 for the others.",
            labels=["provider", "state"],
        )
        opens = CounterMetricFamily(
            "gateway_circuit_breaker_opens",
            "Times a provider's circuit breaker opened (closed to open) in this process.",
            labels=["provider"],
        )
        for provider, breaker in sorted(breakers.items()):
            current = breaker.state()
            for name in _BREAKER_STATES:
                state.add_metric([provider, name], 1.0 if name == current else 0.0)
            opens.add_metric([provider], breaker.opens)
        yield state
        yield opens


#: The ``Content-Type`` of :meth:`GatewayMetrics.exposition`: the classic text format, which
#: every Prometheus version scrapes (what ``generate_latest`` writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
