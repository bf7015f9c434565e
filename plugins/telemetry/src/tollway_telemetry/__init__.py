"""Tollway telemetry (SPEC §7): one OTLP span per request, Prometheus ``/metrics``, and one
``request_completed`` log line per request.

Everything is recorded in ``account``, after the response is complete: the request path does no
span, metric or export work. Spans carry the ids the core put in the ``X-LangWatch-Trace-Id`` /
``X-LangWatch-Span-Id`` headers, and leave the process through the OpenTelemetry SDK's OTLP/HTTP
exporter on its batch processor's worker thread. See ``docs/plugins/telemetry.md``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from quart import Response

from tollway import RequestContext, StashKey, hookimpl
from tollway.spans import span_sinks
from tollway_telemetry._metrics import (
    CONTENT_TYPE,
    OTHER_PLUGIN_METRICS,
    RECORDED_METRICS,
    GatewayMetrics,
    overhead_seconds,
)
from tollway_telemetry._settings import (
    TelemetryConfig,
    TelemetrySettings,
    check_endpoint,
    redact_url,
    resolve,
)
from tollway_telemetry._spans import (
    COST_USD,
    TOKEN_EXTRA,
    Tracing,
    span_attributes,
    token_for,
)

if TYPE_CHECKING:
    from quart import Quart

    from tollway.gateway import Gateway

__all__ = [
    "COST_USD",
    "NAME",
    "OTHER_PLUGIN_METRICS",
    "RECORDED_METRICS",
    "TOKEN_EXTRA",
    "GatewayMetrics",
    "TelemetryConfig",
    "TelemetrySettings",
    "TelemetryState",
    "Tracing",
    "resolve",
    "span_attributes",
    "telemetry_state",
    "token_for",
]

log = logging.getLogger("tollway_telemetry")

#: The ``[plugin.telemetry]`` section.
NAME = "telemetry"


@attrs.define
class TelemetryState:
    """What this plugin keeps on ``gateway.stash``."""

    metrics: GatewayMetrics
    config: TelemetryConfig | None = None
    #: None when export is off.
    tracing: Tracing | None = None


_STATE: StashKey[TelemetryState] = StashKey("telemetry.state")


def telemetry_state(gateway: Gateway) -> TelemetryState:
    """This plugin's state on ``gateway`` (created on first use)."""
    state = gateway.stash.get(_STATE)
    if state is None:
        state = TelemetryState(GatewayMetrics(gateway))
        gateway.stash[_STATE] = state
    return state


@hookimpl
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    register(NAME, TelemetrySettings)


@hookimpl
def register_routes(app: Quart, gateway: Gateway) -> None:
    settings: TelemetrySettings = gateway.settings.plugin(NAME)
    metrics = telemetry_state(gateway).metrics

    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), status=200, content_type=CONTENT_TYPE)

    app.add_url_rule(
        settings.metrics_path, "tollway_telemetry_metrics", prometheus_metrics, methods=["GET"]
    )


def _sdk_endpoint(env: Mapping[str, str]) -> str | None:
    """The endpoint the OpenTelemetry SDK will use when the gateway names none (its scheme
    decides between HTTPS_PROXY and HTTP_PROXY)."""
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")


@hookimpl
def gateway_started(gateway: Gateway) -> None:
    config = resolve(gateway.settings.plugin(NAME), os.environ)
    endpoint = config.endpoint or _sdk_endpoint(os.environ)
    if endpoint:
        config = attrs.evolve(config, proxy=gateway.egress.choose(endpoint).url)
    policy = getattr(gateway, "outbound", None)
    if policy is not None:
        config = check_endpoint(config, policy, os.environ)
    state = telemetry_state(gateway)
    if state.metrics.shared:
        gateway.spawn_daemon(_refresh(state))
    sink = None
    if not config.export and config.endpoint_source == "unset":
        # No endpoint anywhere: keep the spans in-process when a plugin offers a sink (the
        # embedded control plane does).
        sinks = span_sinks(gateway)
        if sinks:
            sink = sinks[0]
            config = attrs.evolve(config, export=True, endpoint_source="in-process")
    state.config = config
    if config.export:
        dropped = state.metrics.spans_dropped
        state.tracing = Tracing(
            config, lambda reason, n: dropped.labels(reason).inc(n), span_sink=sink
        )
    log.info(
        "telemetry_started export=%s endpoint=%s endpoint_source=%s auth_token=%s sampler=%s",
        "on" if config.export else "off",
        f"in-process:{sink.name}"
        if sink is not None
        else redact_url(config.endpoint)
        if config.endpoint
        else ("OTEL_EXPORTER_OTLP_*" if config.export else "-"),
        config.endpoint_source,
        "static" if config.static_token else "per-project",
        config.sampler_arg,
    )


async def _refresh(state: TelemetryState) -> None:
    """Several workers: keep this worker's in-flight gauges in the shared metrics current."""
    while True:
        state.metrics.refresh_gauges()
        await asyncio.sleep(1.0)


@hookimpl
async def gateway_stopping(gateway: Gateway) -> None:
    state = gateway.stash.get(_STATE)
    if state is None or state.tracing is None or state.config is None:
        return
    tracing, state.tracing = state.tracing, None
    await tracing.shutdown(state.config.shutdown_timeout_seconds)


@hookimpl(trylast=True)
def account(ctx: RequestContext) -> None:
    """Metrics, span and log line of a finished request. ``trylast``, so what other plugins'
    ``account`` put on the context (e.g. :data:`COST_USD`) is seen."""
    gateway = ctx.gateway
    state = gateway.stash.get(_STATE) if gateway is not None else None
    if state is None:
        return
    state.metrics.observe(ctx)
    if state.tracing is not None:
        state.tracing.record(ctx)
    if state.config is not None and state.config.request_log:
        _log_request(ctx)


_REQUEST_COMPLETED = (
    "request_completed status=%s endpoint=%s model=%s provider=%s resolved_model=%s "
    "duration_ms=%.1f overhead_ms=%s fallback_count=%d input_tokens=%s output_tokens=%s "
    "stream_chunks=%s error_type=%s key_id=%s project_id=%s trace_id=%s"
)


def _log_request(ctx: RequestContext) -> None:
    """The ``request_completed`` line: built once, only when INFO is on, and handed to the
    handlers as ``log.info`` would, less its caller lookup (a walk up the stack for a caller
    that is always this function)."""
    if not log.isEnabledFor(logging.INFO):
        return
    usage = ctx.usage
    end = ctx.finished if ctx.finished is not None else ctx.started
    overhead = overhead_seconds(ctx)
    principal = ctx.principal
    args = (
        ctx.status if ctx.status is not None else "-",
        ctx.endpoint or "-",
        ctx.model or "-",
        ctx.provider_type or "-",
        ctx.resolved_model or "-",
        (end - ctx.started) * 1000,
        f"{overhead * 1000:.2f}" if overhead is not None else "-",
        ctx.fallback_count,
        usage.input_tokens if usage is not None else "-",
        usage.output_tokens if usage is not None else "-",
        ctx.stream_chunks if ctx.stream else "-",
        ctx.error_type or "-",
        principal.key_id if principal is not None else "-",
        (principal.project_id or "-") if principal is not None else "-",
        ctx.trace_id,
    )
    record = log.makeRecord(
        log.name, logging.INFO, __file__, 0, _REQUEST_COMPLETED, args, None, "_log_request"
    )
    log.handle(record)
