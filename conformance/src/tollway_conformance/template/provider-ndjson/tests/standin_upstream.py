"""A stand-in for Acme's API, for the tests: ``POST /generate`` with Acme's JSON, JSON-lines
streams and error shapes, plus the conformance kit's fault interface (the ``x-simulator-*``
request headers, which the adapter forwards):

* ``x-simulator-fault: 500`` → HTTP 500 ``{"problem": …}``; ``timeout`` → no answer;
  ``midstream:N`` → the stream is cut after N lines;
* ``x-simulator-output-words: N`` → an answer of N words;
* ``x-simulator-event-delay-ms: N`` → N ms between stream lines.

:attr:`AcmeUpstream.disconnects` counts the streams whose client left (what the kit's
``upstream_disconnects()`` reads). Standard library only; one thread per connection.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-conformance"
WORDS = ["acme", "answers", "every", "question", "with", "these", "words", "in", "this", "order"]


class AcmeUpstream:
    """The fake Acme API on a free loopback port (:attr:`url`)."""

    def __init__(self, port: int = 0) -> None:
        self.disconnects = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                upstream.handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- the API ------------------------------------------------------------------------------

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        body = json.loads(req.rfile.read(int(req.headers.get("content-length") or 0)) or b"{}")
        if req.path != "/generate":
            return _problem(req, 404, "not_found", f"no route {req.path}")
        if req.headers.get("x-acme-key") != API_KEY:
            return _problem(req, 401, "auth", "x-acme-key is missing or wrong")
        fault = req.headers.get("x-simulator-fault", "")
        if fault == "500":
            return _problem(req, 500, "busy", "Acme is having a bad day")
        if fault == "timeout":
            time.sleep(10)
            return None
        prompt = body.get("prompt")
        if not isinstance(prompt, list) or not prompt:
            return _problem(req, 400, "bad_input", "prompt must be a non-empty list")
        count = int(req.headers.get("x-simulator-output-words") or len(WORDS))
        words = [WORDS[i % len(WORDS)] for i in range(count)]
        finish = "done"
        limit = body.get("max_output")
        if isinstance(limit, int) and len(words) > limit:
            words, finish = words[:limit], "limit"
        tokens = {"in": sum(len(str(t.get("text", "")).split()) for t in prompt), "out": len(words)}
        if not body.get("stream"):
            doc = {"output": " ".join(words), "finish": finish, "tokens": tokens}
            return _send(req, 200, json.dumps(doc).encode(), "application/json")
        cut = int(fault.partition(":")[2]) if fault.startswith("midstream:") else None
        delay = int(req.headers.get("x-simulator-event-delay-ms") or 0) / 1000
        lines = [{"type": "delta", "text": w if i == 0 else " " + w} for i, w in enumerate(words)]
        lines.append({"type": "end", "finish": finish, "tokens": tokens})
        self._stream(req, lines, cut, delay)
        return None

    def _stream(
        self,
        req: BaseHTTPRequestHandler,
        lines: list[dict[str, Any]],
        cut: int | None,
        delay: float,
    ) -> None:
        req.send_response(200)
        req.send_header("content-type", "application/x-ndjson")
        req.send_header("transfer-encoding", "chunked")
        req.end_headers()
        try:
            for i, line in enumerate(lines):
                if cut is not None and i == cut:
                    req.close_connection = True
                    req.wfile.flush()
                    return  # no terminating chunk: the connection just ends
                data = json.dumps(line).encode() + b"\n"
                req.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                req.wfile.flush()
                if delay:
                    time.sleep(delay)
            req.wfile.write(b"0\r\n\r\n")
            req.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.disconnects += 1
            req.close_connection = True


def _send(req: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str) -> None:
    req.send_response(status)
    req.send_header("content-type", ctype)
    req.send_header("content-length", str(len(data)))
    req.end_headers()
    req.wfile.write(data)


def _problem(req: BaseHTTPRequestHandler, status: int, kind: str, detail: str) -> None:
    _send(
        req,
        status,
        json.dumps({"problem": {"kind": kind, "detail": detail}}).encode(),
        "application/json",
    )


if __name__ == "__main__":
    # On its own, for `tollway serve --demo --config try.toml`: python tests/standin_upstream.py
    parser = argparse.ArgumentParser(description="A stand-in for Acme's API on loopback.")
    parser.add_argument("--port", type=int, default=8100)
    upstream = AcmeUpstream(parser.parse_args().port)
    print(f"Acme stand-in listening on {upstream.url} (api key {API_KEY}); Ctrl-C stops it")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        upstream.stop()
