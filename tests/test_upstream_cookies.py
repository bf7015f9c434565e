"""Upstream cookies stay with the call that got them.

A provider behind a CDN sets cookies (OpenAI's Cloudflare sets ``__cf_bm`` and ``_cfuvid``).
An HTTP client that keeps a cookie jar would send the cookie one caller's call received on
every later call to that host, whoever makes it. The gateway keeps no cookies: an upstream
named by its host name (a jar would keep its cookies; one named by an IP address it would
not) never sees a cookie from the gateway, and no client sees the upstream's ``Set-Cookie``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tollway.testing import GatewayProcess, StaticKey, start_gateway, stop

COMPLETION = {
    "id": "chatcmpl-cookie",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class _Upstream(BaseHTTPRequestHandler):
    """A chat completions endpoint that sets a cookie and records the Cookie headers it got."""

    cookies: list[str | None] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).cookies.append(self.headers.get("cookie"))
        body = json.dumps(COMPLETION).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("set-cookie", "__cf_bm=first-caller; Path=/; HttpOnly")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, list[str | None]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # By host name: a cookie jar keeps the cookies of a named host.
    yield f"http://localhost:{server.server_address[1]}/v1", _Upstream.cookies
    server.shutdown()


@pytest.fixture(scope="module")
def gw(
    upstream: tuple[str, list[str | None]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    g = start_gateway(
        tmp_path_factory.mktemp("cookies"),
        providers=[{"name": "cdn", "type": "openai", "base_url": upstream[0], "api_key": "sk-up"}],
        keys=[StaticKey(name="alice"), StaticKey(name="bob")],
        plugins=["tollway_static_keys", "tollway_provider_openai"],
    )
    yield g
    stop(g.proc)


def test_a_cookie_one_caller_got_is_never_sent_for_another(
    gw: GatewayProcess, upstream: tuple[str, list[str | None]]
) -> None:
    cookies = upstream[1]
    cookies.clear()
    hello = [{"role": "user", "content": "hi"}]
    for name in ("alice", "bob", "bob"):
        raw = gw.openai(key=name).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=hello
        )
        assert raw.parse().choices[0].message.content == "hello"
        assert "set-cookie" not in raw.headers
    assert cookies == [None, None, None]
