"""For the end-to-end tests: a gateway (started with :mod:`tollway.testing`) whose static keys
carry guardrails configs, and a webhook evaluator server on loopback in the test process."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from tollway.guardrails import content_texts, with_texts
from tollway.testing import GatewayProcess, StaticKey, default_providers, toml_value
from tollway.testing import start_gateway as _start_gateway

PLUGINS = (
    "tollway-provider-openai",
    "tollway-provider-anthropic",
    "tollway-static-keys",
    "tollway-guardrails",
    "tollway-pii-redact",
)
WEBHOOK_SECRET = "whsec-test-0123456789"


class Gateway(GatewayProcess):
    """A gateway whose keys are addressed by name."""

    def __init__(self, gw: GatewayProcess) -> None:
        super().__init__(gw.proc, gw.url, gw.keys, gw.log, gw.config, gw.data_dir)
        self.secrets = {k.name: k.secret for k in gw.keys}

    def openai(self, key: str, **kw: Any) -> Any:  # type: ignore[override]
        return super().openai(self.secrets[key], **kw)

    def anthropic(self, key: str, **kw: Any) -> Any:  # type: ignore[override]
        return super().anthropic(self.secrets[key], **kw)

    def post(self, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.secrets[key]}"}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=20)


def _key_table(key: StaticKey) -> str:
    """A ``[[plugin.static-keys.keys]]`` table with ``id = "vk_<name>"``, which the webhook
    payload's ``vk_id`` shows (:class:`~tollway.testing.StaticKey` has no ``id``)."""
    fields: dict[str, Any] = {"name": key.name, "id": f"vk_{key.name}", "secret": key.secret}
    if key.config:
        fields["config"] = key.config
    return "[[plugin.static-keys.keys]]\n" + "".join(
        f"{k} = {toml_value(v)}\n" for k, v in fields.items()
    )


#: The stream_chunk budget of the test gateways: far above the ~5 ms the fast webhook modes
#: take (a loaded test machine must not make them fail open), far below ``/slow``'s 500 ms.
STREAM_BUDGET_MS = 250


def start_gateway(
    tmp: Path, sim_url: str, key_configs: Mapping[str, dict[str, Any]], window_chars: int = 64
) -> Gateway:
    """A gateway in front of ``sim_url`` with one static key per entry of ``key_configs``."""
    keys = [StaticKey(name=name, config=config) for name, config in key_configs.items()]
    tables = "[plugin.guardrails]\n"
    tables += f"stream_chunk_budget_ms = {STREAM_BUDGET_MS}\n"
    tables += f"stream_chunk_window_chars = {window_chars}\n\n"
    tables += "\n".join(_key_table(k) for k in keys)
    gw = _start_gateway(tmp, tables, providers=default_providers(sim_url), keys=[], plugins=PLUGINS)
    gw.keys = keys
    return Gateway(gw)


# --------------------------------------------------------------------------------------------
# The webhook evaluator server
# --------------------------------------------------------------------------------------------


class WebhookServer:
    """An aiohttp server on loopback, in a thread of the test process.

    Paths decide the answer: ``/allow``, ``/block`` (every direction), ``/block-stream`` (only
    ``stream_chunk``), ``/slow`` (sleeps 500 ms, then allows), ``/error`` (HTTP 500), ``/bad``
    (not JSON), ``/censor`` (modify: ``secret-word`` → ``[CENSORED]``), ``/flag-<word>`` (answers
    in ~5 ms: blocks a ``stream_chunk`` whose text contains ``<word>``). Every call is recorded
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
        if mode.startswith("flag-"):
            await asyncio.sleep(0.005)
            flagged = direction == "stream_chunk" and mode[5:] in body["content"]["delta"]
            if flagged:
                return web.json_response({"decision": "block", "reason": f"flagged {mode[5:]}"})
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
