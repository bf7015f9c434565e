"""Real processes for the rate-limit tests: the simulator, gateways with keyed configs, Redis.

Copied in spirit from the repository's ``tests/conftest.py`` (which pytest does not load for
this folder), plus what these tests need: keys with a ``config``, plugin settings, several
gateways sharing one Redis, and a private ``redis-server`` to kill.
"""

from __future__ import annotations

import importlib.metadata
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
#: The plugins these tests run with: the rate limiter, what it needs, and telemetry (which
#: serves /metrics) when installed; found by module so a renamed entry point does not break
#: them. Other plugins are tested in their own folders.
_MODULES = {
    "tollway_rate_limits",
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_telemetry",
}


def plugin_allow_list() -> str:
    eps = importlib.metadata.entry_points(group="tollway")
    return ",".join(sorted(ep.name for ep in eps if ep.value.split(".")[0] in _MODULES))


HELLO = [{"role": "user", "content": "hi"}]


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
    """A TOML inline value (TOML has no null: leave such keys out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + items + " }"
    raise TypeError(f"no TOML for {value!r}")


class Key:
    """A static virtual key with a config, and a fresh id so Redis counters never collide."""

    def __init__(self, config: Mapping[str, Any], *, org: str | None = None) -> None:
        self.secret = mint_key("test")
        self.id = f"vk_{uuid.uuid4().hex[:12]}"
        self.org = org or f"org_{uuid.uuid4().hex[:8]}"
        self.config = dict(config)

    def with_config(self, config: Mapping[str, Any]) -> Key:
        """The same key (secret, id, organization) with another config: what a second gateway
        sees after the operator changed the key."""
        other = Key(config, org=self.org)
        other.secret, other.id = self.secret, self.id
        return other

    def toml(self) -> str:
        return (
            "[[plugin.static-keys.keys]]\n"
            f'name = "{self.id}"\n'
            f'id = "{self.id}"\n'
            f'organization_id = "{self.org}"\n'
            f'secret = "{self.secret}"\n'
            f"config = {toml_value(self.config)}\n"
        )


def openai_provider(sim_url: str, name: str = "sim-openai", **extra: Any) -> str:
    lines = [
        "[[providers]]",
        f'name = "{name}"',
        'type = "openai"',
        f'base_url = "{sim_url}/v1"',
        f'api_key = "{extra.pop("api_key", "sk-upstream-openai")}"',
    ]
    lines += [f"{k} = {toml_value(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def anthropic_provider(sim_url: str) -> str:
    return (
        '[[providers]]\nname = "sim-anthropic"\ntype = "anthropic"\n'
        f'base_url = "{sim_url}"\napi_key = "sk-ant-upstream"\n'
    )


class Gateway:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def openai(self, key: Key, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key.secret, **kw)

    def anthropic(self, key: Key, **kw: Any) -> anthropic.Anthropic:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return anthropic.Anthropic(base_url=self.url, api_key=key.secret, **kw)

    def chat(
        self,
        key: Key,
        client: httpx.Client | None = None,
        headers: Mapping[str, str] | None = None,
        **body: Any,
    ) -> httpx.Response:
        body.setdefault("model", "gpt-4o-mini")
        body.setdefault("messages", HELLO)
        send = (client or httpx).post  # type: ignore[attr-defined]
        return send(  # type: ignore[no-any-return]
            f"{self.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key.secret}", **(headers or {})},
            timeout=20,
        )

    def logs(self) -> str:
        return self.log.read_text()


def start_gateway(
    tmp: Path,
    *,
    providers: str,
    keys: list[Key],
    settings: Mapping[str, Any] | None = None,
    redis_url: str | None = None,
    wait: bool = True,
) -> Gateway:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "tollway.toml"
    text = providers + "\n" + "\n".join(k.toml() for k in keys)
    if settings:
        text += "\n[plugin.tollway-rate-limits]\n"
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
    if wait:
        wait_ready(gw)
    return gw


def wait_ready(gw: Gateway, timeout: float = 20) -> None:
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
    raise AssertionError(f"gateway not ready after {timeout}s:\n{gw.logs()}")


def unique_prefix() -> str:
    return f"tollway-test:rl:{uuid.uuid4().hex[:10]}"


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete this test's keys, and only them."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)


def shared_redis() -> redis.Redis:
    return redis.Redis.from_url(SHARED_REDIS, socket_timeout=2, socket_connect_timeout=2)


class RedisServer:
    """A private ``redis-server`` on a free port (never the shared one), to kill at will."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.kill()
        raise AssertionError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class RedisClusterServers:
    """A private three-node Redis Cluster on loopback (no replicas)."""

    def __init__(self, tmp: Path) -> None:
        self.nodes = [RedisServer(tmp / f"node{i}") for i in range(3)]
        self.url = self.nodes[0].url

    def __enter__(self) -> RedisClusterServers:
        try:
            self._form()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _form(self) -> None:
        for node in self.nodes:
            # An explicit bus port: the default (port + 10000) may not exist for a high port.
            bus = str(free_port())
            node.start("--cluster-enabled", "yes", "--cluster-port", bus)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        client = redis.Redis(port=self.nodes[0].port)
        deadline = time.monotonic() + 10
        try:
            while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                assert time.monotonic() < deadline, "the private Redis Cluster did not form"
                time.sleep(0.05)
        finally:
            client.close()

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.kill()
