"""Real processes for the response-cache tests: the simulator, gateways with keyed configs,
Redis (the shared one with a unique key prefix, or a private ``redis-server`` to kill).

Copied in spirit from the repository's ``tests/conftest.py`` (which pytest does not load for
this folder), plus keys with a ``config`` and a project.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import redis

from tollway.keys import mint_key

SHARED_REDIS = "redis://127.0.0.1:6379/0"
HEADER = "x-langwatch-cache"

#: The plugins these tests run with (found by module, so a renamed entry point does not break
#: them): the cache, what it needs, rate limits (hits must count for them) and telemetry (which
#: serves /metrics) when installed.
_MODULES = {
    "tollway_response_cache",
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_rate_limits",
    "tollway_telemetry",
}


def plugin_allow_list() -> str:
    eps = importlib.metadata.entry_points(group="tollway")
    return ",".join(sorted(ep.name for ep in eps if ep.value.split(".")[0] in _MODULES))


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

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_sim/requests", timeout=5).json())

    def count(self) -> int:
        """Provider requests since the last :meth:`clear`."""
        return int(httpx.get(f"{self.url}/_sim/stats", timeout=5).json()["requests"])

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sim/requests", timeout=5)
        httpx.post(f"{self.url}/_sim/reset", timeout=5)


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
    """A TOML inline value (TOML has no null: leave such keys out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"no TOML for {value!r}")


class Key:
    """A static virtual key with a config and a project (fresh ids: Redis never collides)."""

    def __init__(
        self, config: Mapping[str, Any] | None = None, *, project: str | None = None
    ) -> None:
        self.secret = mint_key("test")
        self.id = f"vk_{uuid.uuid4().hex[:12]}"
        self.project = project or f"proj_{uuid.uuid4().hex[:8]}"
        self.config = dict(config or {})

    def toml(self) -> str:
        text = (
            "[[plugin.static-keys.keys]]\n"
            f'name = "{self.id}"\nid = "{self.id}"\n'
            f'project_id = "{self.project}"\nsecret = "{self.secret}"\n'
        )
        if self.config:
            text += f"config = {toml_value(self.config)}\n"
        return text


def providers(sim_url: str) -> str:
    return f"""
[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{sim_url}/v1"
api_key = "sk-upstream-openai"
models = ["gpt-*", "text-embedding-*"]

[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{sim_url}"
api_key = "sk-ant-upstream"
models = ["claude-*"]
"""


class Gateway:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def openai(self, key: Key) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=key.secret, max_retries=0, timeout=20
        )

    def anthropic(self, key: Key) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key.secret, max_retries=0, timeout=20)

    def post(
        self,
        key: Key,
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

    def logs(self) -> str:
        return self.log.read_text()


def start_gateway(
    tmp: Path,
    sim_url: str,
    keys: list[Key],
    *,
    settings: Mapping[str, Any] | None = None,
    redis_url: str | None = None,
) -> Gateway:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "tollway.toml"
    text = providers(sim_url) + "\n" + "\n".join(k.toml() for k in keys)
    if settings:
        text += "\n[plugin.response-cache]\n"
        text += "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())
    cfg.write_text(text)
    port = free_port()
    log = tmp / "gateway.log"
    env = {
        **os.environ,
        "ENVIRONMENT": "local",
        "TOLLWAY_DATA_DIR": str(tmp / "data"),
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "LOG_FORMAT": "json",
        "SERVER_GRACEFUL_SECONDS": "1",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
        "TOLLWAY_PLUGINS": plugin_allow_list(),
    }
    env.pop("GATEWAY_REDIS_URL", None)
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "--config", str(cfg)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    gw = Gateway(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}:\n{gw.logs()}")
        try:
            if httpx.get(f"{gw.url}/startupz", timeout=1).status_code == 200:
                return gw
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop(proc)
    raise AssertionError(f"gateway not ready after 20s:\n{gw.logs()}")


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
