"""The ``[plugin.telemetry]`` section and how it combines with the environment (SPEC §7, §8).

Environment variables come first, as everywhere in Tollway: a variable that is set wins over the
TOML field of the same meaning. :func:`resolve` turns both into one frozen
:class:`TelemetryConfig` at start-up; nothing here is read per request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from tollway.outbound import ALLOW_CIDRS_ENV, OutboundPolicy

__all__ = [
    "DEFAULT_MAX_QUEUE_SIZE",
    "TelemetryConfig",
    "TelemetrySettings",
    "check_endpoint",
    "redact_url",
    "resolve",
    "traces_endpoint",
]

#: The OpenTelemetry SDK's default ``OTEL_BSP_MAX_QUEUE_SIZE``.
DEFAULT_MAX_QUEUE_SIZE = 2048
_TRACES_PATH = "/v1/traces"


@attrs.frozen
class TelemetrySettings:
    """The ``[plugin.telemetry]`` section. Every field has a default; the environment variable
    named in each comment wins when it is set."""

    #: OTLP/HTTP endpoint (``GATEWAY_OTEL_DEFAULT_ENDPOINT``); ``/v1/traces`` is appended when
    #: missing; ``""`` turns export off. None: see :func:`resolve` for the defaults.
    endpoint: str | None = None
    #: ``X-Auth-Token`` for every span (``GATEWAY_OTEL_DEFAULT_AUTH_TOKEN``), overriding the
    #: per-project token of the key's bundle (``extras["otel_auth_token"]``).
    auth_token: str | None = attrs.field(default=None, repr=False)
    #: Ratio of traces exported, 0..1 (``GATEWAY_OTEL_SAMPLER_ARG``; default 1.0).
    sampler_arg: float | None = None
    #: Exporter 401/403/connection errors are not logged this long after start, unless an
    #: export already succeeded.
    startup_grace_seconds: float = 30.0
    #: At most one ``otel_export_failed`` warning per this many seconds.
    warn_interval_seconds: float = 30.0
    #: Distinct per-project tokens kept (one exporter + batch processor each), LRU.
    max_exporters: int = 64
    #: Spans queued per exporter before the oldest is dropped (``OTEL_BSP_MAX_QUEUE_SIZE``).
    max_queue_size: int | None = None
    #: How long ``gateway_stopping`` waits for the last spans to leave.
    shutdown_timeout_seconds: float = 5.0
    #: One ``request_completed`` INFO line per request (``LOG_REQUESTS``; default on).
    request_log: bool | None = None
    #: Where the Prometheus exposition is served.
    metrics_path: str = "/metrics"


@attrs.frozen
class TelemetryConfig:
    """The effective telemetry configuration, resolved once at start-up."""

    #: False: no span is built or exported (metrics and logs still work).
    export: bool
    #: The full ``…/v1/traces`` URL, or None to let the OpenTelemetry SDK resolve
    #: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    endpoint: str | None
    #: Which setting decided the endpoint (for the start-up log line).
    endpoint_source: str
    static_token: str | None = attrs.field(repr=False)
    sampler_arg: float
    startup_grace_seconds: float
    warn_interval_seconds: float
    max_exporters: int
    max_queue_size: int
    shutdown_timeout_seconds: float
    request_log: bool
    metrics_path: str
    #: The outbound proxy for the OTLP endpoint (the gateway's proxy settings; None: direct).
    proxy: str | None = attrs.field(default=None, repr=False)
    #: The SSRF guard the exporter checks each export's URL with (None: no check). Unset for
    #: the control plane's own endpoint (``LW_GATEWAY_BASE_URL``), which the operator runs.
    outbound: OutboundPolicy | None = None


def check_endpoint(
    config: TelemetryConfig, policy: OutboundPolicy, env: Mapping[str, str]
) -> TelemetryConfig:
    """Check the OTLP endpoint with the gateway's SSRF guard (start-up: raises ``ValueError``
    naming the setting) and return ``config`` with :attr:`TelemetryConfig.outbound` set so the
    exporter checks again when it connects. The control plane's endpoint
    (``LW_GATEWAY_BASE_URL``) is trusted like the control plane itself."""
    if not config.export or config.endpoint_source == "LW_GATEWAY_BASE_URL":
        return config
    url = config.endpoint
    where = config.endpoint_source
    if url is None:  # the SDK resolves OTEL_EXPORTER_OTLP_*: check what it will use
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            if env.get(name, "").strip():
                url, where = env[name].strip(), name
                break
    if url is not None:
        hint = f"a collector on your own network needs its network in {ALLOW_CIDRS_ENV}"
        problem = policy.url_problem(url, hint=hint)
        if problem is not None:
            raise ValueError(f"{where}: {problem}")
    return attrs.evolve(config, outbound=policy if policy.guard else None)


def traces_endpoint(url: str) -> str:
    """``url`` with ``/v1/traces`` appended unless its path already ends with it.

    A trailing slash is dropped first, so ``http://c:4318/`` and ``http://c:4318`` both become
    ``http://c:4318/v1/traces``; a query string is kept after the path.
    """
    url = url.strip()
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(_TRACES_PATH):
        path += _TRACES_PATH
    out = f"{parts.scheme}://{parts.netloc}{path}"
    if parts.query:
        out += f"?{parts.query}"
    return out


def redact_url(url: str) -> str:
    """``url`` without user info or query string, for log lines (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _check_url(url: str, where: str) -> None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = redact_url(url) if "@" in url else url
        raise ValueError(f"{where}: {shown!r} is not an http(s) URL (e.g. http://collector:4318)")
    if "@" in parts.netloc:
        raise ValueError(
            f"{where}: {redact_url(url)!r} has a user name or password in it (user:pass@); put "
            "the credential in a header (GATEWAY_OTEL_DEFAULT_AUTH_TOKEN), not the URL"
        )


def _bool(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def resolve(settings: TelemetrySettings, env: Mapping[str, str]) -> TelemetryConfig:
    """Combine the TOML section with the environment. Raises ``ValueError`` naming the variable
    or field when a value is invalid.

    Endpoint, first match wins:

    1. ``GATEWAY_OTEL_DEFAULT_ENDPOINT`` when present in the environment (empty: no export);
    2. ``endpoint`` in ``[plugin.telemetry]`` (empty: no export);
    3. ``<LW_GATEWAY_BASE_URL>/api/otel/v1/traces`` when a standalone control plane is set;
    4. ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, resolved by the
       OpenTelemetry SDK as it defines them;
    5. otherwise ``endpoint_source="unset"`` and no OTLP export: at start-up the plugin then
       hands spans to an in-process sink when one is offered (``tollway.spans``; the embedded
       control plane offers one), else builds none.
    """
    endpoint: str | None
    source: str
    export = True
    if "GATEWAY_OTEL_DEFAULT_ENDPOINT" in env:
        raw = env["GATEWAY_OTEL_DEFAULT_ENDPOINT"].strip()
        source = "GATEWAY_OTEL_DEFAULT_ENDPOINT"
        if raw:
            _check_url(raw, source)
        endpoint, export = (traces_endpoint(raw), True) if raw else (None, False)
    elif settings.endpoint is not None:
        raw = settings.endpoint.strip()
        source = "plugin.telemetry.endpoint"
        if raw:
            _check_url(raw, source)
        endpoint, export = (traces_endpoint(raw), True) if raw else (None, False)
    elif env.get("LW_GATEWAY_BASE_URL", "").strip():
        base = env["LW_GATEWAY_BASE_URL"].strip()
        _check_url(base, "LW_GATEWAY_BASE_URL")
        endpoint, source = f"{base.rstrip('/')}/api/otel{_TRACES_PATH}", "LW_GATEWAY_BASE_URL"
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint, source = None, "OTEL_EXPORTER_OTLP_*"
    else:
        endpoint, source, export = None, "unset", False

    token = env.get("GATEWAY_OTEL_DEFAULT_AUTH_TOKEN", "").strip() or settings.auth_token or None

    raw_ratio = env.get("GATEWAY_OTEL_SAMPLER_ARG", "").strip()
    if raw_ratio:
        try:
            ratio = float(raw_ratio)
        except ValueError:
            raise ValueError(
                f"GATEWAY_OTEL_SAMPLER_ARG: {raw_ratio!r} is not a number; use a ratio "
                "between 0 and 1 (1.0 exports every trace)"
            ) from None
        where = "GATEWAY_OTEL_SAMPLER_ARG"
    else:
        ratio = 1.0 if settings.sampler_arg is None else settings.sampler_arg
        where = "plugin.telemetry.sampler_arg"
    if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise ValueError(f"{where}: {ratio} is outside 0..1 (1.0 exports every trace)")

    raw_queue = env.get("OTEL_BSP_MAX_QUEUE_SIZE", "").strip()
    if raw_queue:
        if not raw_queue.isdigit() or int(raw_queue) <= 0:
            raise ValueError(f"OTEL_BSP_MAX_QUEUE_SIZE: {raw_queue!r} is not a positive integer")
        queue = int(raw_queue)
    else:
        queue = settings.max_queue_size or DEFAULT_MAX_QUEUE_SIZE
    if queue <= 0:
        raise ValueError("plugin.telemetry.max_queue_size: must be a positive integer")
    if settings.max_exporters <= 0:
        raise ValueError("plugin.telemetry.max_exporters: must be a positive integer")
    if not settings.metrics_path.startswith("/"):
        raise ValueError(
            f"plugin.telemetry.metrics_path: {settings.metrics_path!r} must start with '/'"
        )

    raw_log = env.get("LOG_REQUESTS", "").strip()
    if raw_log:
        request_log = _bool(raw_log)
    else:
        request_log = True if settings.request_log is None else settings.request_log

    return TelemetryConfig(
        export=export,
        endpoint=endpoint,
        endpoint_source=source,
        static_token=token,
        sampler_arg=ratio,
        startup_grace_seconds=settings.startup_grace_seconds,
        warn_interval_seconds=settings.warn_interval_seconds,
        max_exporters=settings.max_exporters,
        max_queue_size=queue,
        shutdown_timeout_seconds=settings.shutdown_timeout_seconds,
        request_log=request_log,
        metrics_path=settings.metrics_path,
    )
