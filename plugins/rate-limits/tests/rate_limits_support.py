"""For the rate-limit tests: gateways started with :mod:`tollway.testing` (keys with a
``config`` and fixed ids, plugin settings, several gateways sharing one Redis), and Redis (the
shared one with a unique key prefix, or a private ``redis-server`` to kill).
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
from tollway.keys import mint_key
from tollway.testing import GatewayProcess, default_providers, free_port, toml_value

SHARED_REDIS = "redis://127.0.0.1:6379/0"
#: The plugins these tests run with: the rate limiter, what it needs, and telemetry (which
#: serves /metrics) when installed. Other plugins are tested in their own folders.
_INSTALLED = {ep.module for ep in importlib.metadata.entry_points(group="tollway")}
MODULES = [
    m
    for m in (
        "tollway_rate_limits",
        "tollway_static_keys",
        "tollway_provider_openai",
        "tollway_provider_anthropic",
        "tollway_telemetry",
    )
    if m in _INSTALLED
]

HELLO = [{"role": "user", "content": "hi"}]


class Key:
    """A static virtual key with a config, and a fresh id so Redis counters never collide
    (written here: :class:`~tollway.testing.StaticKey` has no ``id``)."""

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
        fields = {"name": self.id, "id": self.id, "organization_id": self.org}
        fields |= {"secret": self.secret, "config": self.config}
        lines = (f"{k} = {toml_value(v)}\n" for k, v in fields.items())
        return "[[plugin.static-keys.keys]]\n" + "".join(lines)


def openai_provider(sim_url: str, name: str = "sim-openai", **extra: Any) -> dict[str, Any]:
    return {**default_providers(sim_url)[0], "name": name, **extra}


def anthropic_provider(sim_url: str) -> dict[str, Any]:
    return default_providers(sim_url)[1]


class Gateway(GatewayProcess):
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


def start_gateway(
    tmp: Path,
    *,
    providers: list[dict[str, Any]],
    keys: list[Key],
    settings: Mapping[str, Any] | None = None,
    redis_url: str | None = None,
    wait: bool = True,
) -> Gateway:
    config = "\n".join(k.toml() for k in keys)
    if settings:
        config += "\n[plugin.tollway-rate-limits]\n"
        config += "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())
    env = {"SERVER_GRACEFUL_SECONDS": "1", "GATEWAY_REDIS_URL": redis_url or ""}
    gw = testing.start_gateway(
        tmp, config, env, providers=providers, keys=[], plugins=MODULES, wait=wait
    )
    return Gateway(gw.proc, gw.url, gw.keys, gw.log, gw.config, gw.data_dir)


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
        # Every node must say so: a node that does not yet answers CLUSTERDOWN, which a
        # cluster pipeline (unlike a single command) does not retry.
        deadline = time.monotonic() + 10
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            try:
                while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    assert time.monotonic() < deadline, "the private Redis Cluster did not form"
                    time.sleep(0.05)
            finally:
                client.close()

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.kill()
