"""Shared test helpers for tollway-control-plane: store targets (SQLite and PostgreSQL), the
``tollway`` CLI and ``tollway control-plane`` as subprocesses, signed internal requests."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tollway import testing_hosts
from tollway.signing import signed_headers, verify
from tollway.testing import free_port as free_port
from tollway.testing import stop as stop

PG_BASE = os.environ.get("TOLLWAY_TEST_PG_URL", "postgresql://{user}@127.0.0.1:5432/test")
PEPPER = b"test-pepper-0123456789abcdef0123"
SECRETS_ENV = {
    "LW_VIRTUAL_KEY_PEPPER": PEPPER.decode(),
    "LW_GATEWAY_INTERNAL_SECRET": "test-internal-secret-0123456789ab",
    "LW_GATEWAY_JWT_SECRET": "test-jwt-secret-0123456789abcdefgh",
}
INTERNAL = SECRETS_ENV["LW_GATEWAY_INTERNAL_SECRET"].encode()
JWT_SECRET = SECRETS_ENV["LW_GATEWAY_JWT_SECRET"].encode()


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_admin() -> tuple[Any, str] | None:
    """A connection to the test database (as postgres or root), or None if unreachable."""
    try:
        import psycopg
    except ImportError:
        return None
    for user in ("postgres", "root"):
        url = PG_BASE.format(user=user)
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=3), url
        except psycopg.Error:
            continue
    return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    admin = _pg_admin()
    if admin is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database 'test')")
    conn, url = admin
    schema = f"tollway_test_{secrets.token_hex(6)}"
    conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store target: a SQLite file in a tmp dir, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "tollway.db")
    url: str = request.getfixturevalue("pg_url")
    return url


# --- subprocesses -----------------------------------------------------------------------------


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LW_", "TOLLWAY_")) and k != "ENVIRONMENT"
    }
    env.update(SECRETS_ENV)
    env.update(
        {
            "TOLLWAY_DATA_DIR": str(data_dir),
            # Only this plugin: the CLI starts faster and other plugins' state stays out.
            "TOLLWAY_PLUGINS": "tollway-control-plane",
            "ENVIRONMENT": "local",
        }
    )
    env.update(extra)
    return env


def tollway(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``tollway ARGS`` on the store in ``data_dir``."""
    proc = subprocess.run(
        [sys.executable, "-m", "tollway", *args],
        env=env or cli_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"tollway {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def tollway_json(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return orjson.loads(tollway(data_dir, *args, "--json", env=env).stdout)


class ControlPlaneProcess:
    def __init__(self, proc: subprocess.Popen[Any], url: str, data_dir: Path, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.data_dir = data_dir
        self.log = log

    def logs(self) -> str:
        return self.log.read_text()

    # A signed internal request, as a gateway sends it.
    def internal(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        secret: bytes = INTERNAL,
        now: float | None = None,
        params: dict[str, Any] | None = None,
        timeout: float = 10,
    ) -> httpx.Response:
        all_headers = signed_headers(secret, method, path, body, now=now)
        all_headers.update(headers or {})
        if body:
            all_headers["content-type"] = "application/json"
        return httpx.request(
            method,
            self.url + path,
            content=body or None,
            headers=all_headers,
            params=params,
            timeout=timeout,
        )


def start_control_plane(
    data_dir: Path, *, env: dict[str, str] | None = None, timeout: float = 20
) -> ControlPlaneProcess:
    """``tollway control-plane --port 0``; ready once it printed its address and answers."""
    cp = testing_hosts.start_control_plane(data_dir, env or cli_env(data_dir), timeout=timeout)
    return ControlPlaneProcess(cp.proc, cp.url, data_dir, cp.log)


def verify_response(response: httpx.Response, method: str, path: str) -> None:
    """Raise unless the control plane signed this response."""
    verify(INTERNAL, method, path, response.headers, response.content)


def listening_url(line: str) -> str | None:
    match = re.search(r"listening on (http://\S+)", line)
    return match.group(1) if match else None


# --- the embedded default, as `tollway serve` runs it --------------------------------------


def clean_env(*prefixes: str) -> dict[str, str]:
    """This process's environment without Tollway's, OpenTelemetry's and the test secrets'
    variables (and any other ``prefixes``): what a fresh shell on this machine would have."""
    drop = ("LW_", "TOLLWAY_", "OTEL_", "GATEWAY_OTEL_", *prefixes)
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in SECRETS_ENV}


@contextmanager
def embedded_serve(
    tmp: Path, plugins: str, extra_env: dict[str, str] | None = None, *, drop: tuple[str, ...] = ()
) -> Iterator[tuple[str, dict[str, str], Path]]:
    """``tollway serve`` on the embedded default (store and request records in ``tmp/data``),
    ready on a free port; yields ``(url, env, log)`` and stops it afterwards."""
    port = free_port()
    env = clean_env(*drop)
    env.update(
        {
            "TOLLWAY_DATA_DIR": str(tmp / "data"),
            "TOLLWAY_PLUGINS": plugins,
            "ENVIRONMENT": "local",
            "SERVER_ADDR": f"127.0.0.1:{port}",
            "LOG_FORMAT": "json",
            **(extra_env or {}),
        }
    )
    log = tmp / "gateway.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/startupz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"gateway not ready:\n{log.read_text()}"
            time.sleep(0.05)
        yield url, env, log
    finally:
        stop(proc)
