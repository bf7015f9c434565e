"""End-to-end fixtures: real processes on loopback.

The provider simulator and the gateway run as subprocesses (``python -m tollway_simulator`` and
``python -m tollway serve``); tests talk to them through the official ``openai`` and
``anthropic`` SDKs or plain HTTP.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tollway.keys import mint_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Simulator:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_sim/requests", timeout=5).json())

    def last_request(self) -> dict[str, Any]:
        reqs = self.requests()
        assert reqs, "the simulator received no request"
        return reqs[-1]

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sim/requests", timeout=5)

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.url}/_sim/stats", timeout=5).json())


def start_simulator(*args: str) -> Simulator:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway_simulator", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    assert match, f"simulator did not start: {line!r}"
    return Simulator(proc, match.group(1))


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


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


class Gateway:
    def __init__(
        self, proc: subprocess.Popen[bytes], url: str, key: str, log: Path, config: Path
    ) -> None:
        self.proc = proc
        self.url = url
        self.key = key
        self.log = log
        self.config = config

    def openai(self, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key, **kw)

    def anthropic(self, **kw: Any) -> anthropic.Anthropic:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return anthropic.Anthropic(base_url=self.url, api_key=self.key, **kw)

    def logs(self) -> str:
        return self.log.read_text()


def provider_config(sim_url: str, *, openai_url: str | None = None) -> str:
    return f"""
[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{openai_url or sim_url + "/v1"}"
api_key = "sk-upstream-openai"

[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{sim_url}"
api_key = "sk-ant-upstream"
"""


def start_gateway(
    tmp: Path,
    config: str,
    env: dict[str, str] | None = None,
    *,
    key: str | None = None,
    wait: bool = True,
    key_config: str = "",
) -> Gateway:
    """Start ``python -m tollway serve`` with ``config`` plus one static key; ``key_config`` is a
    TOML inline table for the key config (SPEC §3): ``{ fallback = { max_attempts = 1 } }``."""
    key = key or mint_key("test")
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "tollway.toml"
    cfg.write_text(
        config
        + f"""
[[plugin.static-keys.keys]]
name = "test"
secret = "{key}"
"""
        + (f"config = {key_config}\n" if key_config else "")
    )
    port = free_port()
    log = tmp / "gateway.log"
    full_env = {
        **os.environ,
        "ENVIRONMENT": "local",
        "TOLLWAY_DATA_DIR": str(tmp / "data"),
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "LOG_FORMAT": "json",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
        **(env or {}),
    }
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "--config", str(cfg)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    gw = Gateway(proc, f"http://127.0.0.1:{port}", key, log, cfg)
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


@pytest.fixture(scope="session")
def gateway(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gw"), provider_config(sim.url))
    yield gw
    stop(gw.proc)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Gateway] = []

    def make(config: str, env: dict[str, str] | None = None, **kw: Any) -> Gateway:
        gw = start_gateway(tmp_path / f"gw{len(started)}", config, env, **kw)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        stop(gw.proc)
