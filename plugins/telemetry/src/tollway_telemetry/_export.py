"""Where spans go: one :class:`Sink` per OTLP token (an exporter and its batch processor), and
how export failures are reported.

A sink's exporter is the OpenTelemetry SDK's OTLP/HTTP exporter, or, when a plugin offers an
in-process :class:`~tollway.spans.SpanSink`, one that hands it the OTLP-encoded batch. Both run
on the batch processor's worker thread.

Exporter failures are classified by :class:`_RecordingSession` (the ``requests`` session the
exporter is given) and reported by :class:`ExportHealth`: 401/403/connection errors are silent
during the start-up grace (until the first success), and anything else is one rate-limited
``otel_export_failed`` warning. The exporter's own log lines are dropped (they would be one
ERROR per failed batch).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from tollway.outbound import OutboundPolicy, OutboundRefused
from tollway.spans import SpanSink
from tollway_telemetry._encode import encode
from tollway_telemetry._settings import TelemetryConfig

__all__ = ["EXPORTER_LOGGERS", "SILENCE", "ExportHealth", "OTLPExporter", "Sink", "classify"]

log = logging.getLogger("tollway_telemetry")

_IN_PROCESS_DELAY_MS = 250

# The OTLP exporter logs one ERROR per failed batch and one WARNING per retry; ExportHealth
# reports failures instead (rate-limited, with the start-up grace).
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
)


class _Silence(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


SILENCE = _Silence()


# --- export health ---------------------------------------------------------------------------


class ExportHealth:
    """Decides which export failures are logged, and logs them (thread-safe).

    401/403 and connection errors are expected while a collector or control plane is still
    starting: they are silent for ``grace_s`` after start, or until the first successful export.
    Every other failure, and those after the grace, give at most one WARNING per
    ``interval_s`` saying how many failures it stands for.
    """

    def __init__(
        self,
        grace_s: float,
        interval_s: float,
        endpoint: str,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self._clock = clock
        self._log = logger
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.endpoint = endpoint
        self.started = clock()
        self.ever_succeeded = False
        self.swallowed = 0
        self.failures = 0
        self._unreported = 0
        self._last_warning: float | None = None
        self._lock = threading.Lock()

    def success(self) -> None:
        self.ever_succeeded = True

    def failure(self, kind: str, detail: str, spans: int) -> bool:
        """Record a failed export of ``spans`` spans; True when it was logged."""
        with self._lock:
            now = self._clock()
            self.failures += 1
            if (
                kind in ("auth", "connection")
                and not self.ever_succeeded
                and now - self.started < self.grace_s
            ):
                self.swallowed += 1
                return False
            self._unreported += 1
            if self._last_warning is not None and now - self._last_warning < self.interval_s:
                return False
            self._last_warning = now
            count, self._unreported = self._unreported, 0
        self._log.warning(
            "otel_export_failed endpoint=%s kind=%s %s spans=%d failures_since_last_warning=%d",
            self.endpoint,
            kind,
            detail,
            spans,
            count,
        )
        return True


def classify(status: int | None, error: BaseException | None) -> tuple[str, str]:
    """``(kind, detail)`` of a failed export: kind ``auth`` (401/403), ``connection``,
    ``http`` (another status) or ``error``."""
    if status in (401, 403):
        return "auth", f"status={status}"
    if status is not None and status >= 300:
        return "http", f"status={status}"
    if isinstance(error, OutboundRefused):
        return "refused", f"error={error}"
    if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return "connection", f"error={type(error).__name__}"
    if error is not None:
        return "error", f"error={type(error).__name__}"
    return "error", "error=unknown"


class _RecordingSession(requests.Session):
    """The exporter's HTTP session; remembers how the last request ended, for :func:`classify`.

    Never follows a redirect. With ``policy`` (the SSRF guard), the URL and the addresses its
    host resolves to are checked before sending (again at most every
    :data:`RECHECK_SECONDS`, in the exporter's thread).
    """

    RECHECK_SECONDS = 30.0

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        super().__init__()
        self.last_status: int | None = None
        self.last_error: BaseException | None = None
        self.policy = policy
        self._checked: dict[str, float] = {}

    def _check(self, url: str) -> None:
        policy = self.policy
        if policy is None:
            return
        at = time.monotonic()
        if at - self._checked.get(url, -self.RECHECK_SECONDS) < self.RECHECK_SECONDS:
            return
        policy.check_resolved(url, "OTLP endpoint")
        self._checked[url] = at

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_status, self.last_error = None, None
        kwargs["allow_redirects"] = False
        try:
            self._check(str(url))
            response = super().request(method, url, *args, **kwargs)
        except BaseException as exc:
            self.last_error = exc
            raise
        self.last_status = response.status_code
        return response


# --- sinks -----------------------------------------------------------------------------------


class _GuardedExporter(SpanExporter):
    """Wraps the OTLP exporter: never raises, counts what it loses, reports to the health."""

    def __init__(self, sink: Sink, inner: SpanExporter) -> None:
        self._sink = sink
        self._inner = inner
        self._closed = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        sink = self._sink
        sink.dequeued(len(spans))
        error: BaseException | None = None
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # the processor would log a traceback per batch
            result, error = SpanExportResult.FAILURE, exc
        if result is SpanExportResult.SUCCESS:
            sink.health.success()
            return result
        session = sink.session
        if session is None:  # in-process: the sink raised
            kind, detail = classify(None, error)
        else:
            kind, detail = classify(session.last_status, session.last_error or error)
        sink.on_drop("export_failed", len(spans))
        sink.health.failure(kind, detail, len(spans))
        return result

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class OTLPExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding each batch with :func:`encode` (the bytes
    ``encode_spans`` writes, for a quarter of its CPU: this thread holds the GIL while it
    encodes). Everything else is the exporter's own: its HTTP client sends the bytes (endpoint,
    headers, compression, TLS, timeout, retries), its size limit and its own metrics apply.

    That client is not public API: when the installed exporter has none (its internals differ
    between SDK versions), or after shutdown, or for a batch over the size limit, the
    exporter's own ``export`` runs unchanged. :attr:`fast` says which one runs.
    """

    @property
    def fast(self) -> bool:
        """Whether batches are encoded here (the installed exporter has the client it needs)."""
        client = getattr(self, "_client", None)
        metrics = getattr(self, "_metrics", None)
        return callable(getattr(client, "export", None)) and callable(
            getattr(metrics, "export_operation", None)
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if getattr(self, "_shutdown", True) or not self.fast:
            return super().export(spans)
        try:
            data = encode(spans).SerializePartialToString()
        except Exception:  # the exporter's own handling (it logs, counts and fails the batch)
            return super().export(spans)
        limit = getattr(self, "_max_request_size", None) or 0
        if limit > 0 and len(data) > limit:
            return super().export(spans)  # the exporter's own refusal (logged and counted)
        # What OTLPSpanExporter.export does once it has the bytes.
        with self._metrics.export_operation(len(spans)) as result:
            outcome = self._client.export(data)
            if not outcome.success:
                result.error = outcome.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: outcome.status_code}
                    if outcome.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


class _InProcessExporter(SpanExporter):
    """Hands each batch, OTLP-encoded, to an in-process :class:`~tollway.spans.SpanSink`."""

    def __init__(self, target: SpanSink, token: str | None) -> None:
        self._target = target
        self._token = token

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._target.export(encode(spans).SerializeToString(), self._token)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Sink:
    """One exporter (one ``X-Auth-Token``) and its batch processor. The exporter is OTLP/HTTP,
    or, with ``target``, an in-process :class:`~tollway.spans.SpanSink`."""

    def __init__(
        self,
        token: str | None,
        config: TelemetryConfig,
        health: ExportHealth,
        on_drop: Callable[[str, int], None],
        batch_size: int,
        target: SpanSink | None = None,
    ) -> None:
        self.health = health
        self.on_drop = on_drop
        self.capacity = config.max_queue_size
        inner: SpanExporter
        if target is not None:
            self.session: _RecordingSession | None = None
            inner = _InProcessExporter(target, token)
        else:
            self.session = _RecordingSession(config.outbound)
            # The gateway's proxy choice, not requests' own reading of the environment (which
            # knows no LW_GATEWAY_OUTBOUND_PROXY and would override the session's proxies).
            self.session.trust_env = False
            if config.proxy:
                self.session.proxies = {"http": config.proxy, "https": config.proxy}
            headers = {"X-Auth-Token": token} if token else None
            inner = OTLPExporter(endpoint=config.endpoint, headers=headers, session=self.session)
        self.exporter = _GuardedExporter(self, inner)
        # In-process, a batch costs no round trip: store spans within a quarter second (so a
        # request can be looked up right after it ended) unless OTEL_BSP_SCHEDULE_DELAY says.
        delay = _IN_PROCESS_DELAY_MS if target is not None else None
        if os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "").strip():
            delay = None
        self.processor = BatchSpanProcessor(
            self.exporter,
            max_queue_size=config.max_queue_size,
            max_export_batch_size=min(batch_size, config.max_queue_size),
            schedule_delay_millis=delay,
        )
        # Spans handed to the processor and not yet given to the exporter: the processor's
        # queue length, tracked through public calls. It can run a batch ahead while the worker
        # pops a batch, so a drop may be over-counted by at most one batch at the limit.
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, span: ReadableSpan) -> None:
        with self._lock:
            full = self._pending >= self.capacity
            if not full:
                self._pending += 1
        if full:  # the processor's deque drops its oldest span to take this one
            self.on_drop("queue_full", 1)
        self.processor.on_end(span)

    def dequeued(self, n: int) -> None:
        with self._lock:
            self._pending = max(0, self._pending - n)

    def shutdown(self) -> None:
        """Export what is queued, then close (blocking: call from a thread)."""
        self.processor.shutdown()  # type: ignore[no-untyped-call]

    def abort(self) -> None:
        """Stop retrying now (the exporter's backoff sleeps end) and close the session."""
        self.exporter.shutdown()
