"""Real processes on loopback for the suites: the provider simulator and a gateway.

The suites' fixtures use these; a plugin's own end-to-end tests may too::

    from tollway_conformance.harness import start_gateway, start_simulator, stop

A thin layer over :mod:`tollway.testing` (the core's test helpers): the simulator and the
process helpers are the core's; :func:`start_gateway` runs the core's with this kit's server
(``python -m tollway_conformance.serve`` — ``tollway serve`` plus the conformance probe) and
one static key, and its :class:`GatewayProcess` adds the probe's records. The simulator runs as
a subprocess (``python -m tollway_simulator``); nothing here imports it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from tollway import testing
from tollway.config import ProviderConfig
from tollway.testing import Simulator, StaticKey, free_port, stop, toml_value, wait_ready

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
    "wait_ready",
]

#: The static-keys plugin's entry-point name (the suites' gateways authenticate with it).
STATIC_KEYS = "tollway-static-keys"


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


def start_simulator(*args: str) -> Simulator:
    """Start ``python -m tollway_simulator`` on a free port (extra CLI ``args`` passed on), as
    :func:`tollway.testing.start_simulator`; say what to install when it is missing."""
    if importlib.util.find_spec("tollway_simulator") is None:
        raise RuntimeError(
            "the conformance suites need the provider simulator: pip install tollway-simulator"
        )
    return testing.start_simulator(*args)


# --------------------------------------------------------------------------------------------
# TOML for the gateway's configuration file
# --------------------------------------------------------------------------------------------


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


class GatewayProcess(testing.GatewayProcess):
    """A running gateway subprocess (:class:`tollway.testing.GatewayProcess`: ``url``,
    ``key``, ``openai()``, ``anthropic()``, ``logs()`` …) and the conformance probe's records."""

    #: The JSON-lines file the probe writes (one record per finished request), if any.
    probe: Path | None = None

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
    subprocess) made from that plugin's synchronous per-request hooks. The rest is
    :func:`tollway.testing.start_gateway`.
    """
    probe_file = tmp / "probe.jsonl" if probe or audit_plugin else None
    command = [sys.executable, "-m", "tollway_conformance.serve"]
    if probe_file is not None:
        command += ["--probe", str(probe_file)]
    if audit_plugin:
        command += ["--audit-plugin", audit_plugin]
    static = StaticKey(config=dict(key_config or {}), name="conformance")
    if key:
        static.secret = key
    gw = testing.start_gateway(
        tmp,
        config,
        {"SERVER_GRACEFUL_SECONDS": "3", **(env or {})},
        keys=[static],
        plugins=plugins,
        wait=wait,
        timeout=timeout,
        cls=GatewayProcess,
        command=command,
    )
    gw.probe = probe_file
    return gw
