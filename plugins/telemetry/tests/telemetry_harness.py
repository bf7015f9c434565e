"""For the telemetry tests: an OTLP/HTTP receiver on loopback (in this process, on a thread),
and gateways started with :mod:`tollway.testing` with telemetry settings and keyed projects.

The receiver decodes each ``ExportTraceServiceRequest`` with ``opentelemetry-proto`` and keeps
every span as a plain dict, with the request's path and ``X-Auth-Token``.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client.parser import text_string_to_metric_families

from tollway import testing
from tollway.testing import GatewayProcess, StaticKey, default_providers, stop

#: Only static keys, the two providers and this plugin load in the test gateways, so other
#: plugins installed in the same venv cannot change what these tests see.
PLUGINS = (
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_telemetry",
)
#: Inherited environment variables the test gateways do not see (they would change what is
#: exported or logged).
SCRUBBED = ("OTEL_", "GATEWAY_", "LW_GATEWAY_", "TOLLWAY_", "LOG_")

OPENAI_API_KEY = "sk-upstream-openai-telemetry-3fJ9qLx"
ANTHROPIC_API_KEY = "sk-ant-upstream-telemetry-8KpW2zR"


def wait_for(predicate: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def value(metrics_text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (parsed with prometheus-client's parser);
    0 when absent."""
    want = tuple(sorted(labels.items()))
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and tuple(sorted(s.labels.items())) == want:
                return float(s.value)
    return 0.0


# --- OTLP/HTTP receiver -----------------------------------------------------------------------


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


class OTLPReceiver:
    """An OTLP/HTTP trace receiver. ``delay`` sleeps before each answer; ``status`` is the
    HTTP status it answers with (200 records the spans)."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.lock = threading.Lock()
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                encoding = (self.headers.get("content-encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                receiver._record(self.path, dict(self.headers.items()), body)
                if receiver.delay:
                    time.sleep(receiver.delay)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        lower = {k.lower(): v for k, v in headers.items()}
        spans = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        {
                            "path": path,
                            "token": lower.get("x-auth-token"),
                            "resource": resource,
                            "scope": ss.scope.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": s.kind,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "attributes": _attrs(s.attributes),
                            "events": [
                                {
                                    "name": e.name,
                                    "time": e.time_unix_nano,
                                    "attributes": _attrs(e.attributes),
                                }
                                for e in s.events
                            ],
                            "status_code": s.status.code,
                            "status_message": s.status.message,
                        }
                    )
        with self.lock:
            self.requests.append(
                {"path": path, "headers": lower, "spans": len(spans), "body": body}
            )
            if self.status == 200:
                self.spans.extend(spans)

    def all_spans(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)

    def span_for(self, request_id: str, timeout: float = 10) -> dict[str, Any]:
        """The span whose ``langwatch.gateway_request_id`` is ``request_id`` (waits for it)."""

        def find() -> dict[str, Any] | None:
            for span in self.all_spans():
                if span["attributes"].get("langwatch.gateway_request_id") == request_id:
                    return span
            return None

        return wait_for(find, timeout, f"the span of {request_id}")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- simulator and gateway subprocesses ------------------------------------------------------


def stop_together(*procs: subprocess.Popen[Any]) -> None:
    """:func:`~tollway.testing.stop` these processes at the same time."""
    with ThreadPoolExecutor(len(procs)) as pool:
        list(pool.map(stop, procs))


class GatewayProc(GatewayProcess):
    """A gateway whose keys are addressed by name."""

    def __init__(self, gw: GatewayProcess) -> None:
        super().__init__(gw.proc, gw.url, gw.keys, gw.log, gw.config, gw.data_dir)
        self.secrets = {k.name: k.secret for k in gw.keys}

    def openai(self, key: str = "a", **kw: Any) -> Any:  # type: ignore[override]
        return super().openai(self.secrets[key], **kw)

    def metrics_text(self) -> str:
        response = httpx.get(f"{self.url}/metrics", timeout=5)
        assert response.status_code == 200, response.text
        return response.text


#: Each key: (name, project id, otel_auth_token or None).
DEFAULT_KEYS = (("a", "proj-a", "tok-project-a"), ("b", "proj-b", "tok-project-b"))


def start_gateway(
    tmp: Path,
    sim_url: str,
    env: dict[str, str] | None = None,
    *,
    telemetry: str = "shutdown_timeout_seconds = 1\n",
    keys: tuple[tuple[str, str, str | None], ...] = DEFAULT_KEYS,
    wait: bool = True,
) -> GatewayProc:
    openai_, anthropic_ = default_providers(sim_url)
    providers = [
        {**openai_, "api_key": OPENAI_API_KEY},
        {**anthropic_, "api_key": ANTHROPIC_API_KEY},
    ]
    static_keys = [
        StaticKey(name=name, project_id=project, extras={"otel_auth_token": token} if token else {})
        for name, project, token in keys
    ]
    full_env = {"OTEL_BSP_SCHEDULE_DELAY": "100", **(env or {})}
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}
    with mock.patch.dict(os.environ, inherited, clear=True):
        gw = testing.start_gateway(
            tmp,
            "[plugin.telemetry]\n" + telemetry,
            full_env,
            providers=providers,
            keys=static_keys,
            plugins=PLUGINS,
            wait=wait,
        )
    return GatewayProc(gw)
