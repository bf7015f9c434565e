"""The SSRF guard (SPEC §8) also holds for host *names*: outside ``ENVIRONMENT=local`` a provider
whose host resolves only to loopback/private addresses is refused at connect time (a literal
private address is already refused by the configuration)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tollway.testing import GatewayProcess, Simulator, start_gateway, start_simulator, stop

PLUGINS = ["tollway_static_keys", "tollway_provider_openai"]
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _private_name() -> str:
    """This machine's host name when it resolves to loopback/private addresses only (the usual
    /etc/hosts entry); such a name is not a literal address, so only resolution can catch it."""
    name = socket.gethostname()
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, 80, socket.AF_INET)}
    except OSError:
        pytest.skip(f"host name {name!r} does not resolve here")
    ips = [ipaddress.ip_address(a) for a in found]
    if not ips or not all(ip.is_loopback or ip.is_private for ip in ips):
        pytest.skip(f"host name {name!r} resolves to public addresses {found}")
    if name == "localhost" or name.endswith(".localhost"):
        pytest.skip("the host name is literally localhost (refused by the config check)")
    return name


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


def _gateway(tmp: Path, sim: Simulator, environment: str) -> GatewayProcess:
    port = sim.url.rsplit(":", 1)[1]
    provider = {
        "name": "internal",
        "type": "openai",
        "base_url": f"http://{_private_name()}:{port}/v1",
        "api_key": "sk-internal",
    }
    return start_gateway(
        tmp, env={"ENVIRONMENT": environment}, providers=[provider], plugins=PLUGINS
    )


def _chat(gw: GatewayProcess) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        json=HELLO,
        headers={"authorization": f"Bearer {gw.secret()}"},
        timeout=20,
    )


def test_a_name_resolving_to_a_private_address_is_refused_outside_local(
    sim: Simulator, tmp_path: Path
) -> None:
    gw = _gateway(tmp_path, sim, "production")
    try:
        r = _chat(gw)
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["type"] == "provider_error"
        assert "SSRF guard" in error["message"] and "127.0.0.1" in error["message"]
        assert sim.requests() == []  # nothing reached the internal address
    finally:
        stop(gw.proc)


def test_the_same_name_works_in_local(sim: Simulator, tmp_path: Path) -> None:
    gw = _gateway(tmp_path, sim, "local")
    try:
        r = _chat(gw)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
    finally:
        stop(gw.proc)
