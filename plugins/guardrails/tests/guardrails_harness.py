"""Real processes for the end-to-end tests: the provider simulator, a gateway whose static keys
carry guardrails configs, and a webhook evaluator server on loopback in the test process."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
from aiohttp import web

from tollway.guardrails import content_texts, with_texts
from tollway.keys import mint_key

PLUGINS = (
    "tollway-provider-openai,tollway-provider-anthropic,tollway-static-keys,"
    "tollway-guardrails,tollway-pii-redact"
)
WEBHOOK_SECRET = "whsec-test-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Simulator:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def bodies(self) -> list[bytes]:
        reqs = httpx.get(f"{self.url}/_sim/requests", timeout=5).json()
        return [base64.b64decode(r["body"]) for r in reqs]

    def last_body(self) -> dict[str, Any]:
        bodies = self.bodies()
        assert bodies, "the simulator received no request"
        return dict(json.loads(bodies[-1]))

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sim/requests", timeout=5)


def start_simulator() -> Simulator:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway_simulator", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    assert match, f"simulator did not start: {line!r}"
    return Simulator(proc, match.group(1))


def toml_value(value: Any) -> str:
    """A JSON-like value as a one-line TOML value (JSON strings are valid TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"no TOML for {value!r}")


class Gateway:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, keys: dict[str, str], log: Path):
        self.proc = proc
        self.url = url
        self.keys = keys
        self.log = log

    def openai(self, key: str, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[key], **kw)

    def anthropic(self, key: str, **kw: Any) -> anthropic.Anthropic:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return anthropic.Anthropic(base_url=self.url, api_key=self.keys[key], **kw)

    def post(self, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.keys[key]}"}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=20)

    def log_lines(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")
        ]


def start_gateway(
    tmp: Path,
    sim_url: str,
    key_configs: dict[str, dict[str, Any]],
    plugins: str = PLUGINS,
    extra_toml: str = "",
) -> Gateway:
    """A gateway in front of ``sim_url`` with one static key per entry of ``key_configs``."""
    tmp.mkdir(parents=True, exist_ok=True)
    keys = {name: mint_key("test") for name in key_configs}
    text = f"""
[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{sim_url}/v1"
api_key = "sk-upstream-openai"

[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{sim_url}"
api_key = "sk-ant-upstream"
{extra_toml}
"""
    for name, config in key_configs.items():
        text += f'\n[[plugin.static-keys.keys]]\nname = "{name}"\nsecret = "{keys[name]}"\n'
        text += f'id = "vk_{name}"\n'
        if config:
            text += f"config = {toml_value(config)}\n"
    cfg = tmp / "tollway.toml"
    cfg.write_text(text)
    port = free_port()
    log = tmp / "gateway.log"
    env = {
        **os.environ,
        "ENVIRONMENT": "local",
        "TOLLWAY_DATA_DIR": str(tmp / "data"),
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
        "LOG_FORMAT": "json",
        "TOLLWAY_PLUGINS": plugins,
    }
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "--config", str(cfg)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    gw = Gateway(proc, f"http://127.0.0.1:{port}", keys, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{gw.url}/startupz", timeout=1).status_code == 200:
                return gw
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop(proc)
    raise AssertionError(f"gateway not ready after 20 s:\n{log.read_text()}")


# --------------------------------------------------------------------------------------------
# The webhook evaluator server
# --------------------------------------------------------------------------------------------


class WebhookServer:
    """An aiohttp server on loopback, in a thread of the test process.

    Paths decide the answer: ``/allow``, ``/block`` (every direction), ``/block-stream`` (only
    ``stream_chunk``), ``/slow`` (sleeps 500 ms, then allows), ``/error`` (HTTP 500), ``/bad``
    (not JSON), ``/censor`` (modify: ``secret-word`` → ``[CENSORED]``). Every call is recorded
    with whether its ``X-Tollway-Signature`` matched :data:`WEBHOOK_SECRET`.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "webhook server did not start"
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{mode}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        raw = await request.read()
        body = json.loads(raw)
        signature = request.headers.get("X-Tollway-Signature")
        expected = hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        with self._lock:
            self.calls.append(
                {
                    "mode": mode,
                    "body": body,
                    "signature": signature,
                    "verified": signature is not None and hmac.compare_digest(signature, expected),
                }
            )
        direction = body["direction"]
        if mode == "allow":
            return web.json_response({"decision": "allow"})
        if mode == "block" or (mode == "block-stream" and direction == "stream_chunk"):
            return web.json_response(
                {"decision": "block", "reason": f"the policy service refused this ({direction})"}
            )
        if mode == "block-stream":
            return web.json_response({"decision": "allow"})
        if mode == "slow":
            await asyncio.sleep(0.5)
            return web.json_response({"decision": "allow"})
        if mode == "error":
            return web.json_response({"error": "boom"}, status=500)
        if mode == "bad":
            return web.Response(text="this is not json", content_type="text/plain")
        if mode == "censor":
            content = body["content"]
            texts = content_texts(direction, content)
            new = [t.replace("secret-word", "[CENSORED]") for t in texts]
            if new == texts:
                return web.json_response({"decision": "allow"})
            return web.json_response(
                {
                    "decision": "modify",
                    "reason": "censored",
                    "modified_content": with_texts(direction, content, new),
                }
            )
        return web.json_response({"error": f"unknown mode {mode}"}, status=404)

    def calls_for(self, mode: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["mode"] == mode]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
