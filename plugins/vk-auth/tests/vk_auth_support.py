"""Test support: a protocol-faithful stand-in for the control plane's internal API.

It speaks /tmp/brief/protocol.md exactly — signed requests checked, every response signed,
ETag/304, the long-poll change feed — on a real loopback socket, so the plugin's real HTTP client,
cache and feed run against it. The real control plane (``tollway-control-plane``) is exercised by
``test_vk_auth_e2e.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from tollway.keys import hash_key, mint_key
from tollway.signing import SignatureError, signed_headers, verify
from tollway.testing import free_port as free_port

PEPPER = b"test-pepper-0123456789abcdef0123"
INTERNAL = b"test-internal-0123456789abcdef012"


async def until(predicate: Callable[[], bool], within: float) -> None:
    """Wait until ``predicate()`` holds, for at most ``within`` seconds."""
    deadline = time.monotonic() + within
    for _ in range(100_000):
        if predicate() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.01)


def bundle_for(vk_id: str, secret: str, **over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "vk_id": vk_id,
        "revision": 1,
        "name": f"key-{vk_id}",
        "display_prefix": secret[:18],
        "status": "active",
        "expires_at": None,
        "organization_id": "org_1",
        "team_id": "team_1",
        "project_id": "proj_1",
        "principal_id": None,
        "config": {"models_allowed": ["gpt-4o*"]},
        "providers": [
            {
                "id": "mp_1",
                "name": "openai-prod",
                "type": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": "sk-upstream",
                "models": None,
                "priority": 0,
                "config": {},
                "revision": 1,
                "rpm": None,
                "tpm": 1000,
                "rpd": None,
                "model": None,
            }
        ],
        "extras": {"otel_auth_token": None},
    }
    b.update(over)
    return b


class FakeControlPlane:
    """An aiohttp app on 127.0.0.1 serving ``/api/internal/gateway/*``."""

    def __init__(self, secret: bytes = INTERNAL, pepper: bytes = PEPPER) -> None:
        self.secret = secret
        self.pepper = pepper
        self.keys: dict[str, tuple[str, str]] = {}  # hash -> (vk_id, status)
        self.bundles: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.fault: str | None = None  # "500", "badsig", "slow"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    # --- store helpers --------------------------------------------------------------------

    def add_key(self, vk_id: str | None = None, **over: Any) -> tuple[str, str]:
        secret = mint_key("test")
        vk_id = vk_id or f"vk_{len(self.bundles) + 1}"
        self.keys[hash_key(self.pepper, secret)] = (vk_id, "active")
        self.bundles[vk_id] = bundle_for(vk_id, secret, **over)
        return vk_id, secret

    def set_status(self, vk_id: str, status: str) -> None:
        for h, (v, _) in list(self.keys.items()):
            if v == vk_id:
                self.keys[h] = (v, status)
        self.bundles[vk_id]["status"] = status
        self.event(f"vk_{'revoked' if status == 'revoked' else 'updated'}", vk_id=vk_id)

    def event(self, kind: str, vk_id: str | None = None, provider_id: str | None = None) -> None:
        self.events.append(
            {"id": len(self.events) + 1, "kind": kind, "vk_id": vk_id, "provider_id": provider_id}
        )
        self._changed.set()

    # --- server ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/internal/gateway/resolve-key", self._resolve)
        app.router.add_get("/api/internal/gateway/config/{vk_id}", self._config)
        app.router.add_get("/api/internal/gateway/changes", self._changes)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _reply(
        self,
        request: web.Request,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        data = b"" if body is None else orjson.dumps(body)
        h = dict(headers or {})
        secret = b"wrong-secret" if self.fault == "badsig" else self.secret
        h.update(signed_headers(secret, request.method, request.path, data))
        if data:
            h["Content-Type"] = "application/json"
        return web.Response(status=status, body=data, headers=h)

    async def _check(self, request: web.Request) -> web.Response | None:
        body = await request.read()
        self.calls.append(f"{request.method} {request.path}")
        if self.fault == "500":
            return web.Response(status=502, text="bad gateway")
        if self.fault == "slow":
            await asyncio.sleep(10)
        try:
            verify(self.secret, request.method, request.path, request.headers, body)
        except SignatureError as exc:
            return self._reply(
                request, 401, {"error": {"type": "invalid_signature", "message": str(exc)}}
            )
        return None

    async def _resolve(self, request: web.Request) -> web.Response:
        refused = await self._check(request)
        if refused is not None:
            return refused
        doc = orjson.loads(await request.read())
        found = self.keys.get(hash_key(self.pepper, doc["key_presented"]))
        if found is None:
            err = {"type": "invalid_api_key", "code": "unknown_key", "message": "unknown key"}
            return self._reply(request, 401, {"error": err})
        vk_id, status = found
        if status != "active":
            err = {"type": "invalid_api_key", "code": status, "message": f"the key is {status}"}
            return self._reply(request, 401, {"error": err})
        now = int(time.time())
        return self._reply(
            request,
            200,
            {"vk_id": vk_id, "revision": 1, "jwt": f"jwt-{vk_id}", "expires_at": now + 900},
        )

    async def _config(self, request: web.Request) -> web.Response:
        refused = await self._check(request)
        if refused is not None:
            return refused
        vk_id = request.match_info["vk_id"]
        if request.headers.get("Authorization") != f"Bearer jwt-{vk_id}":
            return self._reply(request, 401, {"error": {"type": "invalid_jwt", "message": "jwt"}})
        bundle = self.bundles.get(vk_id)
        if bundle is None:
            err = {"type": "not_found", "code": "unknown_key", "message": "no such key"}
            return self._reply(request, 404, {"error": err})
        data = orjson.dumps(bundle)
        etag = f'"{vk_id}:{bundle["revision"]}:{hashlib.sha256(data).hexdigest()[:16]}"'
        if request.headers.get("If-None-Match") == etag:
            return self._reply(request, 304, None, {"ETag": etag})
        return self._reply(request, 200, bundle, {"ETag": etag})

    async def _changes(self, request: web.Request) -> web.Response:
        refused = await self._check(request)
        if refused is not None:
            return refused
        since = int(request.query.get("since", "-1"))
        timeout_s = float(request.query.get("timeout_s", "0"))
        current = len(self.events)
        if since < 0:
            return self._reply(request, 200, {"cursor": current, "events": []})
        deadline = time.monotonic() + timeout_s
        while len(self.events) <= since and time.monotonic() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=0.2)
            except TimeoutError:
                pass
        new = [e for e in self.events if e["id"] > since]
        return self._reply(request, 200, {"cursor": len(self.events), "events": new})
