"""The start-up netcheck (SPEC §8): ``/startupz`` stays 503 until every provider host resolves
and accepts a TCP connection; the reference's log lines name what failed. Real gateways."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tollway.testing import (
    GatewayProcess,
    Simulator,
    default_providers,
    free_port,
    start_gateway,
    start_simulator,
    stop,
)

PLUGINS = ["tollway_static_keys", "tollway_provider_openai", "tollway_provider_anthropic"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


def _provider(base_url: str) -> list[dict[str, Any]]:
    return [{"name": "p", "type": "openai", "base_url": base_url, "api_key": "sk-x"}]


def _startupz(gw: GatewayProcess, want: str, within: float = 20) -> dict[str, Any]:
    """Poll ``/startupz`` until its body's status is ``want``; return the body."""
    deadline = time.monotonic() + within
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert gw.proc.poll() is None, gw.logs()
        try:
            r = httpx.get(f"{gw.url}/startupz", timeout=2)
            body = r.json()
            if body.get("status") == want:
                assert r.status_code == (200 if want == "ok" else 503)
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"/startupz never said {want!r}; last {body}\n{gw.logs()}")


def _log_lines(gw: GatewayProcess, text: str) -> list[str]:
    return [r["msg"] for r in gw.log_records() if text in r.get("msg", "")]


def test_unresolvable_provider_host_keeps_startupz_503(tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path,
        providers=_provider("http://no-such-host.invalid/v1"),
        plugins=PLUGINS,
        wait=False,
    )
    try:
        body = _startupz(gw, "netcheck_failed")
        line = "dns resolution failed: lookup no-such-host.invalid: no such host"
        assert body["checks"]["netcheck"]["no-such-host.invalid:80"] == f"error: {line}"
        assert line in body["error"]
        assert line in _log_lines(gw, "dns resolution failed")
        # Alive all the same: only /startupz reports.
        assert httpx.get(f"{gw.url}/healthz").status_code == 200
    finally:
        stop(gw.proc)


def test_refused_tcp_is_the_tcp_dial_line(tmp_path: Path) -> None:
    port = free_port()
    gw = start_gateway(
        tmp_path, providers=_provider(f"http://127.0.0.1:{port}/v1"), plugins=PLUGINS, wait=False
    )
    try:
        body = _startupz(gw, "netcheck_failed")
        line = f"tcp dial failed: dial tcp 127.0.0.1:{port}: connect: connection refused"
        assert body["checks"]["netcheck"][f"127.0.0.1:{port}"] == f"error: {line}"
        assert line in _log_lines(gw, "tcp dial failed")
    finally:
        stop(gw.proc)


def test_empty_netcheck_hosts_skips_the_check(tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path,
        providers=_provider("http://no-such-host.invalid/v1"),
        plugins=PLUGINS,
        env={"SERVER_NETCHECK_HOSTS": ""},
        wait=False,
    )
    try:
        body = _startupz(gw, "ok")
        assert body["checks"]["netcheck"] == "skipped"
    finally:
        stop(gw.proc)


def test_netcheck_hosts_override_the_provider_list(tmp_path: Path, sim: Simulator) -> None:
    sim_hostport = sim.url.removeprefix("http://")
    gw = start_gateway(
        tmp_path,
        providers=_provider("http://no-such-host.invalid/v1"),
        plugins=PLUGINS,
        env={"SERVER_NETCHECK_HOSTS": sim_hostport},
        wait=False,
    )
    try:
        body = _startupz(gw, "ok")
        assert body["checks"]["netcheck"] == {sim_hostport: "ok"}
    finally:
        stop(gw.proc)


def test_reachable_providers_pass_at_once(tmp_path: Path, sim: Simulator) -> None:
    """The usual test and production case: the netcheck adds next to nothing to start-up."""
    t0 = time.monotonic()
    gw = start_gateway(tmp_path, providers=default_providers(sim.url), plugins=PLUGINS)
    try:
        body = _startupz(gw, "ok")
        sim_hostport = sim.url.removeprefix("http://")
        assert body["checks"]["netcheck"] == {sim_hostport: "ok"}
        assert time.monotonic() - t0 < 15
        passed = [r for r in gw.log_records() if r.get("msg", "").startswith("netcheck_passed")]
        assert passed, gw.logs()
        elapsed_ms = int(passed[0]["msg"].rpartition("elapsed_ms=")[2])
        assert elapsed_ms < 1000
    finally:
        stop(gw.proc)


def test_with_a_proxy_the_proxy_host_is_checked(tmp_path: Path) -> None:
    port = free_port()
    gw = start_gateway(
        tmp_path,
        providers=_provider("https://no-such-host.invalid/v1"),
        plugins=PLUGINS,
        env={"LW_GATEWAY_OUTBOUND_PROXY": f"http://u:hidden@127.0.0.1:{port}"},
        wait=False,
    )
    try:
        body = _startupz(gw, "netcheck_failed")
        assert list(body["checks"]["netcheck"]) == [f"127.0.0.1:{port}"]
        assert "tcp dial failed" in body["error"]
        assert "hidden" not in json.dumps(body)
        assert "hidden" not in gw.logs()
    finally:
        stop(gw.proc)
