"""``tollway.testing``'s simulator-backed gateway helpers, with real processes."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tollway.testing import (
    SimulatedGateway,
    Simulator,
    default_providers,
    start_simulated_gateway,
    start_simulator,
    stop,
)


def _post(sim: Simulator, path: str, body: object) -> None:
    req = urllib.request.Request(
        f"{sim.url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Probe": "Yes"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def test_recorded_request_parses_body_and_headers() -> None:
    sim = start_simulator()
    try:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        _post(sim, "/v1/chat/completions", body)
        _post(sim, "/v1/chat/completions", {**body, "max_tokens": 5})
        last = sim.recorded_request()
        assert last["json"] == {**body, "max_tokens": 5}
        assert last["headers"]["x-probe"] == "Yes"
        assert sim.recorded_request(0)["json"] == body
        with pytest.raises(AssertionError, match="received no request"):
            sim.recorded_request(skip_paths={"/v1/chat/completions"})
    finally:
        stop(sim.proc)


def test_simulated_gateway_reads_the_upstream_and_stops_everything(tmp_path: Path) -> None:
    sim, other = start_simulator(), start_simulator()
    stack = start_simulated_gateway(tmp_path, sim, other, providers=default_providers(sim.url))
    try:
        assert isinstance(stack, SimulatedGateway) and stack.sim is sim
        stack.openai().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
        upstream = stack.upstream()
        assert upstream["path"] == "/v1/chat/completions"
        assert upstream["json"]["max_tokens"] == 20
        assert upstream["headers"]["authorization"] == "Bearer sk-upstream-openai"
    finally:
        stack.stop_all()
    assert all(p.poll() is not None for p in (stack.proc, sim.proc, other.proc))


def test_simulators_stop_when_the_gateway_does_not_start(tmp_path: Path) -> None:
    sim = start_simulator()
    with pytest.raises(AssertionError, match="gateway exited"):
        start_simulated_gateway(tmp_path, sim, config="this is not TOML [[[")
    assert sim.proc.poll() is not None
    with pytest.raises(ValueError, match="at least one simulator"):
        start_simulated_gateway(tmp_path)
