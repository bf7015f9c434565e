"""Real processes on loopback for the suites: the provider simulator and a gateway.

The suites' fixtures use these; a plugin's own end-to-end tests may too::

    from tollway_conformance.harness import start_gateway, start_simulator, stop

Everything here starts subprocesses (``python -m tollway_simulator``, ``python -m
tollway_conformance.serve`` — ``tollway serve`` plus the conformance probe) and talks HTTP to them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx

from tollway.config import ProviderConfig
from tollway.keys import mint_key
from tollway.testing import free_port, stop

__all__ = [
    "GatewayProcess",
    "Simulator",
    "Target",
    "free_port",
    "provider_toml",
    "start_gateway",
    "start_simulator",
    "stop",
    "toml_value",
]

#: The static-keys plugin's entry-point name (the suites' gateways authenticate with it).
STATIC_KEYS = "tollway-static-keys"


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class Simulator:
    """A running ``tollway_simulator`` (see plugins/simulator/README.md)."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def requests(self) -> list[dict[str, Any]]:
        """The provider requests it received, oldest first (``/_sim/requests``)."""
        return list(httpx.get(f"{self.url}/_sim/requests", timeout=5).json())

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sim/requests", timeout=5)

    def stats(self) -> dict[str, int]:
        """``requests``, ``streams_started``, ``streams_client_disconnected``, …"""
        return dict(httpx.get(f"{self.url}/_sim/stats", timeout=5).json())


def start_simulator(*args: str) -> Simulator:
    """Start ``python -m tollway_simulator --port 0`` and wait for its ``listening on`` line."""
    try:
        import tollway_simulator  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "the conformance suites need the provider simulator: pip install tollway-simulator"
        ) from exc
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway_simulator", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        stop(proc)
        raise RuntimeError(f"the simulator did not start: {line!r}")
    return Simulator(proc, match.group(1))


# --------------------------------------------------------------------------------------------
# TOML for the gateway's configuration file
# --------------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, Iterable):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def provider_toml(config: ProviderConfig) -> str:
    """One ``[[providers]]`` table for ``config`` (fields left at their defaults are omitted)."""
    lines = ["[[providers]]"]
    for field in attrs.fields(ProviderConfig):
        value = getattr(config, field.name)
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = getattr(default, "factory")()  # noqa: B009
        if value is None or (value == default and field.name not in ("name", "type")):
            continue
        lines.append(f"{field.name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Target:
    """A running gateway to check from the outside: its base URL, a key, a model the key may
    use."""

    url: str
    key: str
    model: str = "gpt-4o-mini"

    def openai(self, **kw: Any) -> Any:
        """An ``openai.OpenAI`` client (no retries)."""
        import openai

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30)
        kw.setdefault("api_key", self.key)
        return openai.OpenAI(base_url=f"{self.url}/v1", **kw)

    def anthropic(self, **kw: Any) -> Any:
        """An ``anthropic.Anthropic`` client (no retries)."""
        import anthropic

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30)
        kw.setdefault("api_key", self.key)
        return anthropic.Anthropic(base_url=self.url, **kw)


@attrs.define
class GatewayProcess:
    """A running gateway subprocess and what the test needs to talk to it."""

    proc: subprocess.Popen[bytes]
    url: str
    key: str
    log: Path
    config: Path
    #: The JSON-lines file the probe writes (one record per finished request), if any.
    probe: Path | None = None

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def openai(self, **kw: Any) -> Any:
        """An ``openai.OpenAI`` client for this gateway (no retries)."""
        import openai

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key, **kw)

    def anthropic(self, **kw: Any) -> Any:
        """An ``anthropic.Anthropic`` client for this gateway (no retries)."""
        import anthropic

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return anthropic.Anthropic(base_url=self.url, api_key=self.key, **kw)

    def records(self) -> list[dict[str, Any]]:
        """Every probe record so far (``kind`` ``request`` or ``blocking``)."""
        if self.probe is None or not self.probe.exists():
            return []
        out = []
        for line in self.probe.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def record_for(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The probe's record of one request (``account`` runs after the response: wait)."""
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.records():
                if rec.get("kind") == "request" and rec.get("request_id") == request_id:
                    return rec
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the gateway did not finish request {request_id} (no `account` call "
                    f"within {timeout:.0f} s); gateway log:\n{self.logs()[-3000:]}"
                )
            time.sleep(0.02)


def start_gateway(
    tmp: Path,
    config: str = "",
    *,
    env: Mapping[str, str] | None = None,
    key: str | None = None,
    key_config: Mapping[str, Any] | None = None,
    plugins: Iterable[str] | None = None,
    probe: bool = False,
    audit_plugin: str | None = None,
    wait: bool = True,
    timeout: float = 30.0,
) -> GatewayProcess:
    """Start a gateway on a free loopback port with ``config`` (TOML) plus one static key.

    ``plugins`` sets ``TOLLWAY_PLUGINS`` (only those entry points load; include
    ``tollway-static-keys``). ``probe`` records every finished request (``account``) in a
    JSON-lines file; ``audit_plugin`` also records blocking calls (file, socket, sleep,
    subprocess) made from that plugin's synchronous per-request hooks.
    """
    key = key or mint_key("test")
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "tollway.toml"
    text = config + f'\n[[plugin.static-keys.keys]]\nname = "conformance"\nsecret = "{key}"\n'
    if key_config:
        text += f"config = {toml_value(key_config)}\n"
    cfg.write_text(text)
    port = free_port()
    log = tmp / "gateway.log"
    probe_file = tmp / "probe.jsonl" if probe or audit_plugin else None
    full_env = {
        **os.environ,
        "ENVIRONMENT": "local",
        "TOLLWAY_DATA_DIR": str(tmp / "data"),
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "LOG_FORMAT": "json",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
        "SERVER_GRACEFUL_SECONDS": "3",
        **(env or {}),
    }
    full_env.pop("TOLLWAY_CONFIG", None)
    if plugins is not None:
        full_env["TOLLWAY_PLUGINS"] = ",".join(plugins)
    args = [sys.executable, "-m", "tollway_conformance.serve", "--config", str(cfg)]
    if probe_file is not None:
        args += ["--probe", str(probe_file)]
    if audit_plugin:
        args += ["--audit-plugin", audit_plugin]
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
    gw = GatewayProcess(proc, f"http://127.0.0.1:{port}", key, log, cfg, probe_file)
    if wait:
        wait_ready(gw, timeout)
    return gw


def wait_ready(gw: GatewayProcess, timeout: float = 30.0) -> None:
    """Wait for ``/startupz`` to answer 200 — or 503 whose only complaint is the start-up
    netcheck (``"status": "netcheck_failed"``: the suites point a provider at a dead port on
    purpose, and the gateway serves meanwhile); fail with the gateway's log if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise AssertionError(
                f"the gateway exited with status {gw.proc.returncode} at start-up:\n{gw.logs()}"
            )
        try:
            resp = httpx.get(f"{gw.url}/startupz", timeout=1)
            if resp.status_code == 200:
                return
            if resp.status_code == 503 and _status(resp) == "netcheck_failed":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop(gw.proc)
    raise AssertionError(f"the gateway was not ready after {timeout:.0f} s:\n{gw.logs()}")


def _status(resp: httpx.Response) -> object:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("status") if isinstance(body, dict) else None
