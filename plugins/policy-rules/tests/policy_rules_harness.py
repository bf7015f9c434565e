"""Real processes for the end-to-end tests: the provider simulator and a gateway whose
static keys carry configs (copied in spirit from the repo's ``tests/conftest.py``, which only
adds a key without config)."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai

from tollway.keys import mint_key

#: Only the plugins of these modules load in the test gateway (by their entry-point names, found
#: at run time), so other installed plugins cannot change what these tests see.
MODULES = (
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_policy_rules",
)


def plugin_names(modules: tuple[str, ...] = MODULES) -> str:
    """The ``TOLLWAY_PLUGINS`` value that loads exactly the entry points of ``modules``."""
    eps = importlib.metadata.entry_points(group="tollway")
    names = sorted(ep.name for ep in eps if ep.value.split(":")[0] in modules)
    missing = set(modules) - {ep.value.split(":")[0] for ep in eps}
    assert not missing, f"not installed: {sorted(missing)}"
    return ",".join(names)


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

    def last_body(self) -> bytes:
        reqs = self.requests()
        assert reqs, "the simulator received no request"
        return base64.b64decode(reqs[-1]["body"])

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
        self._clients: dict[tuple[str, str], Any] = {}

    def openai(self, key: str) -> openai.OpenAI:
        """An openai SDK client for the key named ``key`` (one per key, reused)."""
        client = self._clients.get(("openai", key))
        if client is None:
            client = self._clients[("openai", key)] = openai.OpenAI(
                base_url=f"{self.url}/v1", api_key=self.keys[key], max_retries=0, timeout=20
            )
        return client  # type: ignore[no-any-return]

    def anthropic(self, key: str) -> anthropic.Anthropic:
        """An anthropic SDK client for the key named ``key`` (one per key, reused)."""
        client = self._clients.get(("anthropic", key))
        if client is None:
            client = self._clients[("anthropic", key)] = anthropic.Anthropic(
                base_url=self.url, api_key=self.keys[key], max_retries=0, timeout=20
            )
        return client  # type: ignore[no-any-return]

    def post(
        self,
        key: str,
        path: str,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        h = {"authorization": f"Bearer {self.keys[key]}", "content-type": "application/json"}
        h.update(headers or {})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.url + path, content=content, headers=h, timeout=20)

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


def start_gateway(
    tmp: Path,
    sim_url: str,
    key_configs: dict[str, dict[str, Any]],
    modules: tuple[str, ...] = MODULES,
) -> Gateway:
    """A gateway in front of ``sim_url`` with one static key per entry of ``key_configs``,
    loading only the plugins of ``modules``."""
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
"""
    for name, config in key_configs.items():
        text += f'\n[[plugin.static-keys.keys]]\nname = "{name}"\nsecret = "{keys[name]}"\n'
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
        "LOG_FORMAT": "json",
        "TOLLWAY_PLUGINS": plugin_names(modules),
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
