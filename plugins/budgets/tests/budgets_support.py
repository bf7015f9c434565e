"""Real processes for the budgets tests: the provider simulator, ``tollway`` CLI commands,
``tollway control-plane`` and gateways (``python -m tollway serve``), after the repository's
``tests/conftest.py`` (which pytest does not load for this folder), plus what these tests
need: shared gateway secrets, a budgets Redis prefix per test, the ledger read from SQLite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from tollway import testing as _testing
from tollway import testing_hosts
from tollway.testing import free_port as free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRETS = {
    "LW_VIRTUAL_KEY_PEPPER": "budgets-test-pepper-0123456789abcdef",
    "LW_GATEWAY_INTERNAL_SECRET": "budgets-test-internal-0123456789ab",
    "LW_GATEWAY_JWT_SECRET": "budgets-test-jwt-secret-0123456789ab",
}
#: The plugins the gateways under test load (others are tested in their own folders).
GATEWAY_PLUGINS = ",".join(
    [
        "tollway-budgets",
        "tollway-control-plane",
        "tollway-vk-auth",
        "tollway-static-keys",
        "tollway-provider-openai",
        "tollway-provider-anthropic",
        "tollway-telemetry",
    ]
)
#: Prices the tests give their provider (USD per million tokens = micro-USD per token), so a
#: simulator call costs a round few thousand micro-USD.
PRICES = {"gpt-4o": {"input_per_mtok": 20, "output_per_mtok": 100}}
PRICE_IN, PRICE_OUT = Fraction(20), Fraction(100)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Stop a gateway, giving its outbox drain 15 s."""
    _testing.stop(proc, timeout=15, sig=sig)


def cost_of(prompt_tokens: int, completion_tokens: int) -> int:
    """The expected cost of a call at :data:`PRICES` (exact, rounded once half up)."""
    value = prompt_tokens * PRICE_IN + completion_tokens * PRICE_OUT
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LW_", "TOLLWAY_", "GATEWAY_")) and k != "ENVIRONMENT"
    }
    env.update(SECRETS)
    env.update({"TOLLWAY_DATA_DIR": str(data_dir), "ENVIRONMENT": "local"})
    env.update(extra)
    return env


# --- the simulator ------------------------------------------------------------------------------


class Simulator:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url


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


# --- the CLI ------------------------------------------------------------------------------------


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """``tollway ARGS --json`` on the store in ``data_dir``; the parsed output."""
    full_env = base_env(data_dir, TOLLWAY_PLUGINS="tollway-control-plane", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "tollway", *args, "--json"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise AssertionError(f"tollway {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return orjson.loads(proc.stdout)


def setup_key(
    data_dir: Path, sim_url: str, *, scope: str = "project"
) -> tuple[dict[str, Any], str]:
    """The migration guide's first steps: a provider (the simulator, with test prices) and a
    key. Returns the key (JSON) and its secret."""
    cli(
        data_dir,
        "model-providers",
        "create",
        "--type",
        "openai",
        "--name",
        f"sim-{uuid.uuid4().hex[:6]}",
        "--base-url",
        f"{sim_url}/v1",
        "--api-key",
        "sk-upstream-test",
        "--config-json",
        orjson.dumps({"prices": PRICES}).decode(),
    )
    key = cli(
        data_dir, "virtual-keys", "create", "--name", "eng", "--scope", scope, "--env", "test"
    )
    return key, key["secret"]


# --- control plane and gateways -----------------------------------------------------------------


class Proc:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_control_plane(data_dir: Path, timeout: float = 20, port: int = 0) -> Proc:
    cp = testing_hosts.start_control_plane(
        data_dir,
        base_env(data_dir, TOLLWAY_PLUGINS="tollway-control-plane"),
        port=port,
        timeout=timeout,
    )
    return Proc(cp.proc, cp.url, cp.log)


def start_gateway(
    workdir: Path,
    data_dir: Path,
    *,
    config: str = "",
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
) -> Proc:
    """``tollway serve`` on ``data_dir`` (embedded control plane unless ``env`` names
    ``LW_GATEWAY_BASE_URL``), with ``config`` as its TOML file."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "tollway.toml"
    cfg.write_text(config)
    port = port or free_port()
    log = workdir / f"gateway-{port}-{uuid.uuid4().hex[:4]}.log"
    full_env = base_env(
        data_dir,
        SERVER_ADDR=f"127.0.0.1:{port}",
        LOG_FORMAT="json",
        SERVER_DRAIN_DELAY_SECONDS="0",
        TOLLWAY_PLUGINS=GATEWAY_PLUGINS,
        GATEWAY_OTEL_DEFAULT_ENDPOINT="",
        LW_GATEWAY_AUTH_CACHE_REDIS_PREFIX=f"tollway-test-budgets-vkauth-{uuid.uuid4().hex[:8]}:",
        **(env or {}),
    )
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "--config", str(cfg)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    gw = Proc(proc, f"http://127.0.0.1:{port}", log)
    if wait:
        wait_ready(gw)
    return gw


def wait_ready(gw: Proc, timeout: float = 30) -> None:
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


def budgets_toml(prefix: str, **extra: Any) -> str:
    lines = ["[plugin.budgets]", f'redis_key_prefix = "{prefix}"']
    for k, v in extra.items():
        lines.append(f"{k} = {orjson.dumps(v).decode()}")
    return "\n".join(lines) + "\n"


def new_prefix() -> str:
    return f"tollway-test-budgets-{uuid.uuid4().hex[:10]}"


def drop_redis_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for pattern in (f"{prefix}:*", "tollway-test-budgets-vkauth-*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


# --- the ledger ---------------------------------------------------------------------------------


def ledger_rows(data_dir: Path, vk_id: str | None = None) -> list[dict[str, Any]]:
    """Ledger rows of the SQLite store in ``data_dir`` (read-only)."""
    db = data_dir / "tollway.db"
    conn = sqlite3.connect(db, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        sql = "SELECT * FROM ledger"
        params: tuple[Any, ...] = ()
        if vk_id is not None:
            sql += " WHERE vk_id = ?"
            params = (vk_id,)
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def chat_body(words: int = 6, max_tokens: int = 20, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": " ".join(["budget"] * words)}],
        "max_tokens": max_tokens,
        **extra,
    }


def post_chat(
    client: httpx.Client, url: str, secret: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return client.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}", **headers},
        json=body,
        timeout=20,
    )


def rows_by_request(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["request_id"]: r for r in rows}


def iter_sse(response: httpx.Response) -> Iterator[bytes]:
    yield from response.iter_bytes()


# --- a Redis of the test's own --------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` of this test's own on a free port (never the shared one), to freeze
    with SIGSTOP."""

    def __init__(self, tmp: Path) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed"
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            wait_for(lambda: _pings(client), 10, "the private redis-server")
        finally:
            client.close()

    def reservations(self, prefix: str) -> dict[str, int]:
        client = redis.Redis.from_url(self.url)
        try:
            out = {}
            for key in client.scan_iter(match=f"{prefix}:*:c"):
                for field, value in client.hgetall(key).items():
                    if field.startswith(b"r:"):
                        out[field[2:].decode()] = int(value)
            return out
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
