"""For the response-cache tests: gateways started with :mod:`tollway.testing` (keys with a
``config`` and a project, plugin settings, Redis), the simulator's request counter, and Redis
(the shared one with a unique key prefix, or a private ``redis-server`` to kill).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import redis

from tollway import testing
from tollway.testing import GatewayProcess, StaticKey, default_providers, free_port, toml_value

SHARED_REDIS = "redis://127.0.0.1:6379/0"
HEADER = "x-langwatch-cache"

#: The plugins these tests run with: the cache, what it needs, rate limits (hits must count for
#: them) and telemetry (which serves /metrics) when installed.
_INSTALLED = {ep.module for ep in importlib.metadata.entry_points(group="tollway")}
MODULES = [
    m
    for m in (
        "tollway_response_cache",
        "tollway_static_keys",
        "tollway_provider_openai",
        "tollway_provider_anthropic",
        "tollway_rate_limits",
        "tollway_telemetry",
    )
    if m in _INSTALLED
]


def plugin_allow_list() -> str:
    return testing.plugin_allow_list(MODULES)


class Simulator(testing.Simulator):
    def count(self) -> int:
        """Provider requests since the last :meth:`clear`."""
        return self.stats()["requests"]

    def clear(self) -> None:
        super().clear()
        httpx.post(f"{self.url}/_sim/reset", timeout=5)


def start_simulator() -> Simulator:
    sim = testing.start_simulator()
    return Simulator(sim.proc, sim.url)


class Gateway(GatewayProcess):
    def post(
        self,
        key: StaticKey,
        path: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        send = (client or httpx).post  # type: ignore[attr-defined]
        return send(  # type: ignore[no-any-return]
            f"{self.url}{path}",
            json=body,
            headers={
                "Authorization": f"Bearer {key.secret}",
                "anthropic-version": "2023-06-01",
                **(headers or {}),
            },
            timeout=30,
        )


def start_gateway(
    tmp: Path,
    sim_url: str,
    keys: list[StaticKey],
    *,
    settings: Mapping[str, Any] | None = None,
    redis_url: str | None = None,
) -> Gateway:
    openai_, anthropic_ = default_providers(sim_url)
    providers = [
        {**openai_, "models": ["gpt-*", "text-embedding-*"]},
        {**anthropic_, "models": ["claude-*"]},
    ]
    config = ""
    if settings:
        config = "[plugin.response-cache]\n"
        config += "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())
    env = {"SERVER_GRACEFUL_SECONDS": "1", "GATEWAY_REDIS_URL": redis_url or ""}
    gw = testing.start_gateway(tmp, config, env, providers=providers, keys=keys, plugins=MODULES)
    return Gateway(gw.proc, gw.url, gw.keys, gw.log, gw.config, gw.data_dir)


def unique_prefix() -> str:
    return f"tollway-test:rc:{uuid.uuid4().hex[:10]}"


def shared_redis() -> redis.Redis:
    return redis.Redis.from_url(SHARED_REDIS, socket_timeout=2, socket_connect_timeout=2)


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete this test run's keys, and only them."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)


class RedisServer:
    """A private ``redis-server`` on a free port (never the shared one), to kill at will."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [*(exe, "--port", str(self.port), "--bind", "127.0.0.1"), *self._options()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.kill()
        raise AssertionError("private redis-server did not start")

    def _options(self) -> list[str]:
        return ["--save", "", "--appendonly", "no", "--dir", str(self.tmp)]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def metric(gw: Gateway, name: str, labels: str) -> float | None:
    """A sample from ``/metrics`` (None when absent or no /metrics endpoint)."""
    r = httpx.get(f"{gw.url}/metrics", timeout=5)
    if r.status_code != 200:
        return None
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in r.text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None
