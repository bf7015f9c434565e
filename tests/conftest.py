"""End-to-end fixtures: real processes on loopback (helpers in :mod:`tollway.testing`).

The provider simulator and the gateway run as subprocesses (``python -m tollway_simulator``
and ``python -m tollway serve``); tests talk to them through the official ``openai`` and
``anthropic`` SDKs or plain HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tollway.testing import (
    GatewayProcess,
    Simulator,
    StaticKey,
    free_port,
    start_simulator,
    stop,
    wait_ready,
)
from tollway.testing import start_gateway as _start_gateway

Gateway = GatewayProcess

__all__ = [
    "Gateway",
    "Simulator",
    "free_port",
    "provider_config",
    "start_gateway",
    "start_simulator",
    "stop",
    "wait_ready",
]


#: For a gateway that many tests share, some injecting faults on purpose: a breaker that a run of
#: injected 5xx would open must not answer 503 to the next module's tests.
SHARED_BREAKER = "config = { circuit_breaker = { failure_threshold = 1000000 } }\n"


def provider_config(sim_url: str, *, openai_url: str | None = None, shared: bool = False) -> str:
    extra = SHARED_BREAKER if shared else ""
    return f"""
[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{openai_url or sim_url + "/v1"}"
api_key = "sk-upstream-openai"
{extra}
[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{sim_url}"
api_key = "sk-ant-upstream"
{extra}"""


def start_gateway(
    tmp: Path,
    config: str,
    env: dict[str, str] | None = None,
    *,
    key: str | None = None,
    wait: bool = True,
    key_config: dict[str, Any] | None = None,
) -> Gateway:
    """``config`` TOML plus one static key (with ``key_config`` as its SPEC §3 config)."""
    static = StaticKey(config=key_config or {})
    if key:
        static.secret = key
    return _start_gateway(tmp, config, env, keys=[static], wait=wait)


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="session")
def gateway(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gw"), provider_config(sim.url, shared=True))
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
