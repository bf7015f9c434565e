"""What each request costs besides time: Redis commands (``INFO commandstats`` of a Redis the
bench runs for the target alone), control-plane store rows, and the spans a loopback OTLP
receiver (run by the bench) gets from the gateway."""

from __future__ import annotations

import gzip
import shutil
import socket
import sqlite3
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from procs import Proc, free_port, wait_until

# --- a private Redis -------------------------------------------------------------------------


def _redis_command(port: int, *args: str, timeout: float = 3.0) -> bytes:
    """One RESP command on a fresh connection; the raw reply (bulk strings only, as INFO)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                break
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                size = int(head[1:])
                if size < 0 or len(rest) >= size + 2:
                    break
    return data


def start_redis(work: Path, name: str) -> tuple[Proc, int] | None:
    """A ``redis-server`` on a free loopback port, no persistence, for one target alone (so its
    command counts are the target's, not every other user's of a shared Redis); None when there
    is no ``redis-server`` binary."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    d = work / f"redis-{name}"
    d.mkdir()
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(d)]
    proc = Proc(f"redis-{name}", argv, d / "redis.log")

    def ready() -> bool:
        try:
            return _redis_command(port, "PING").startswith(b"+PONG")
        except OSError:
            return False

    wait_until(ready, proc, 10, f"redis-server for {name}")
    return proc, port


def redis_commands(port: int) -> dict[str, int]:
    """Calls per command since the server started (``INFO commandstats``), INFO itself left out."""
    text = _redis_command(port, "INFO", "commandstats").decode(errors="replace")
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("cmdstat_"):
            continue
        name, _, rest = line.partition(":")
        fields = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
        cmd = name.removeprefix("cmdstat_")
        if cmd != "info":
            out[cmd] = int(fields.get("calls", "0"))
    return out


def diff_counts(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


def redis_round_trips(base: str) -> dict[str, int]:
    """The gateway's own count of Redis round trips (``gateway_redis_round_trips_total``), by
    path: ``request`` (while serving a request) and ``background`` (settlement flushes, lease
    renewals, live-stats sharing), and ``served``: the chat requests it answered (the
    denominator: wrk counts only the responses it read, not the requests in flight when it
    stopped, whose round trips were made). {} when the gateway exposes none."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, int] = {}
    prefix = 'gateway_redis_round_trips_total{path="'
    served = 0.0
    for line in text.splitlines():
        if line.startswith(prefix):
            path = line[len(prefix) :].split('"', 1)[0]
            out[path] = out.get(path, 0) + int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("gateway_http_requests_total{") and "chat/completions" in line:
            served += float(line.rsplit(" ", 1)[1])
    if out:
        out["served"] = int(served)
    return out


def served_requests(base: str) -> int:
    """Chat requests the gateway answered, from its own ``gateway_http_requests_total``."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_http_requests_total{") and "chat/completions" in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


# --- the control-plane store -----------------------------------------------------------------


def store_rows(db: Path) -> dict[str, int]:
    """Rows per table of a SQLite store, read-only ({} when there is no store)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        tables = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not r[0].startswith("sqlite_")
        ]
        return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
    finally:
        con.close()


# --- a loopback OTLP/HTTP receiver ------------------------------------------------------------


class OtlpReceiver:
    """``POST /v1/traces`` (OTLP/HTTP protobuf): counts the spans and the root spans received."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self._msg = trace_service_pb2.ExportTraceServiceRequest
        self.lock = threading.Lock()
        self.spans = 0
        self.roots = 0
        self.batches = 0
        self.errors = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    enc = (self.headers.get("Content-Encoding") or "").lower()
                    if enc == "gzip":
                        body = gzip.decompress(body)
                    elif enc == "deflate":
                        body = zlib.decompress(body)
                    receiver.add(body)
                    status = 200
                except Exception:  # a broken export is counted, never fatal
                    with receiver.lock:
                        receiver.errors += 1
                    status = 400
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, body: bytes) -> None:
        req = self._msg()
        req.ParseFromString(body)
        spans = roots = 0
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans += 1
                    roots += not span.parent_span_id
        with self.lock:
            self.spans += spans
            self.roots += roots
            self.batches += 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "spans": self.spans,
                "roots": self.roots,
                "batches": self.batches,
                "errors": self.errors,
            }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
