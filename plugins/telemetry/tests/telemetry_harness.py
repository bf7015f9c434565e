"""Real processes for the telemetry tests: an OTLP/HTTP receiver on loopback (in this process,
on a thread), the provider simulator and the gateway (subprocesses).

The receiver decodes each ``ExportTraceServiceRequest`` with ``opentelemetry-proto`` and keeps
every span as a plain dict, with the request's path and ``X-Auth-Token``.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client.parser import text_string_to_metric_families

from tollway.keys import mint_key

_MODULES = ("tollway_static_keys", "tollway_provider_openai", "tollway_provider_anthropic")


def plugin_allow_list() -> str:
    """``TOLLWAY_PLUGINS`` for the test gateways: static keys, the two providers and this
    plugin, by their installed entry-point names, so other plugins installed in the same venv
    cannot change what these tests see."""
    names = [
        ep.name
        for ep in importlib.metadata.entry_points(group="tollway")
        if ep.value.split(":")[0] in (*_MODULES, "tollway_telemetry")
    ]
    return ",".join(sorted(names))


OPENAI_API_KEY = "sk-upstream-openai-telemetry-3fJ9qLx"
ANTHROPIC_API_KEY = "sk-ant-upstream-telemetry-8KpW2zR"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
            self.requests.append({"path": path, "headers": lower, "spans": len(spans)})
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


class Simulator:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url


def start_simulator(*args: str) -> Simulator:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway_simulator", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    assert match, f"simulator did not start: {line!r}"
    return Simulator(proc, match.group(1))


def stop(*procs: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM every process, then wait for each (killing one that outlives ``timeout``)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def provider_config(sim_url: str) -> str:
    return f"""
[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{sim_url}/v1"
api_key = "{OPENAI_API_KEY}"

[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{sim_url}"
api_key = "{ANTHROPIC_API_KEY}"
"""


class GatewayProc:
    def __init__(
        self, proc: subprocess.Popen[bytes], url: str, keys: dict[str, str], log: Path
    ) -> None:
        self.proc = proc
        self.url = url
        self.keys = keys
        self.log = log

    def openai(self, key: str = "a", **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[key], **kw)

    def logs(self) -> str:
        return self.log.read_text()

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
    tmp.mkdir(parents=True, exist_ok=True)
    secrets: dict[str, str] = {}
    text = provider_config(sim_url) + "\n[plugin.telemetry]\n" + telemetry
    for name, project, token in keys:
        secret = mint_key("test")
        secrets[name] = secret
        extras = f'extras = {{ otel_auth_token = "{token}" }}\n' if token else ""
        text += (
            f'\n[[plugin.static-keys.keys]]\nname = "{name}"\nsecret = "{secret}"\n'
            f'project_id = "{project}"\n{extras}'
        )
    cfg = tmp / "tollway.toml"
    cfg.write_text(text)
    port = free_port()
    log = tmp / "gateway.log"
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "GATEWAY_", "LW_GATEWAY_", "TOLLWAY_", "LOG_"))
    }
    full_env = {
        **inherited,
        "ENVIRONMENT": "local",
        "TOLLWAY_DATA_DIR": str(tmp / "data"),
        "TOLLWAY_PLUGINS": plugin_allow_list(),
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "LOG_FORMAT": "json",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "SERVER_DRAIN_DELAY_SECONDS": "0",  # no load balancer to wait for in tests
        **(env or {}),
    }
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "--config", str(cfg)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    gw = GatewayProc(proc, f"http://127.0.0.1:{port}", secrets, log)
    if wait:
        wait_ready(gw)
    return gw


def wait_ready(gw: GatewayProc, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {gw.proc.returncode}:\n{gw.logs()}")
        try:
            if httpx.get(f"{gw.url}/startupz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop(gw.proc)
    raise AssertionError(f"gateway not ready after {timeout}s:\n{gw.logs()}")
