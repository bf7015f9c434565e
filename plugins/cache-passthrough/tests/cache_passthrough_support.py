"""Real processes for the cache-passthrough tests: the simulator and gateways with keyed configs.

Copied in spirit from the repository's ``tests/conftest.py`` (which pytest does not load for
this folder), plus keys that carry a ``config``.
"""

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai

from tollway.keys import mint_key

DATA = Path(__file__).parent / "data"

#: The plugins these tests run with, found by module so a renamed entry point does not break
#: them.
_MODULES = {
    "tollway_cache_passthrough",
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
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

    def last_body(self) -> bytes:
        """The exact bytes of the last provider request the simulator received."""
        reqs = self.requests()
        assert reqs, "the simulator received no request"
        return base64.b64decode(reqs[-1]["body"])

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sim/requests", timeout=5)
        # Forget the prompt prefixes it has seen, so cache usage starts from a cold cache.
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
    """A static virtual key with a config."""

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.secret = mint_key("test")
        self.config = dict(config or {})

    def toml(self) -> str:
        text = f'[[plugin.static-keys.keys]]\nname = "{self.name}"\nsecret = "{self.secret}"\n'
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
models = ["gpt-*"]

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

    def anthropic(self, key: Key) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key.secret, max_retries=0, timeout=20)

    def openai(self, key: Key) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=key.secret, max_retries=0, timeout=20
        )

    def logs(self) -> str:
        return self.log.read_text()


def start_gateway(tmp: Path, sim_url: str, keys: list[Key]) -> Gateway:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "tollway.toml"
    cfg.write_text(providers(sim_url) + "\n" + "\n".join(k.toml() for k in keys))
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


def claude_code_requests() -> list[dict[str, Any]]:
    """The two captured Claude Code requests (see data/SOURCE.md)."""
    return list(json.loads((DATA / "claude-code-2.1.330-tool.json").read_text()))


def claude_code_headers(capture: dict[str, Any], key: Key) -> dict[str, str]:
    """The captured request's headers, with our key in ``x-api-key`` as Claude Code sends it."""
    pairs = capture["headers"]
    skip = {"x-api-key", "content-length", "connection", "accept-encoding", "host"}
    headers = {k: v for k, v in pairs if k.lower() not in skip}
    headers["x-api-key"] = key.secret
    return headers


def message_start_usage(sse: str) -> dict[str, Any]:
    """The ``usage`` of an Anthropic stream's ``message_start`` event."""
    for block in sse.split("\n\n"):
        if "event: message_start" in block:
            data = next(line[6:] for line in block.splitlines() if line.startswith("data: "))
            return dict(json.loads(data)["message"]["usage"])
    raise AssertionError(f"no message_start in the stream:\n{sse[:500]}")
