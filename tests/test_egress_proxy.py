"""Outbound proxy (SPEC §8): real gateway, real simulator, a real HTTP proxy (proxy.py) between.

What aiohttp does, and so what these tests see at the proxy: an ``http://`` upstream goes to the
proxy as an absolute-form request (``POST http://127.0.0.1:…/v1/chat/completions``), an
``https://`` upstream as ``CONNECT host:443`` and TLS inside the tunnel. The simulator speaks
plain HTTP, so the SDK round trips use the first form; the CONNECT form is checked against a
TLS port the tunnel reaches.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tollway.config import load_settings
from tollway.egress import Egress, mask_url, proxy_problem
from tollway.provider import UpstreamHTTP
from tollway.testing import Simulator, default_providers, free_port, start_gateway, stop

PROXY_USER, PROXY_PASSWORD = "egress", "pr0xy-s3cret"


class Proxy:
    """``python -m proxy`` (proxy.py) on a free loopback port, its access log in a file."""

    def __init__(self, tmp: Path, auth: bool = False) -> None:
        self.port = free_port()
        self.log = tmp / f"proxy-{self.port}.log"
        args = [
            sys.executable,
            "-m",
            "proxy",
            "--hostname",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num-workers",
            "1",
            "--num-acceptors",
            "1",
            "--log-file",
            str(self.log),
        ]
        if auth:
            args += ["--basic-auth", f"{PROXY_USER}:{PROXY_PASSWORD}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        creds = f"{PROXY_USER}:{PROXY_PASSWORD}@" if auth else ""
        self.url = f"http://{creds}127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        stop(self.proc)
        raise AssertionError("proxy.py did not start")

    def seen(self) -> list[str]:
        """The access-log request lines (``GET host:port/path``, ``CONNECT host:port``)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return re.findall(r"access_log:\d+ - \S+ - (\w+ \S+)", text)

    def saw(self, pattern: str, within: float = 5.0) -> bool:
        """Whether an access-log line matches ``pattern`` (a regex). proxy.py writes a line when
        the client's connection closes: stop the gateway (or let the call end) first."""
        deadline = time.monotonic() + within
        while True:
            if any(re.fullmatch(pattern, line) for line in self.seen()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def stop(self) -> None:
        stop(self.proc)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    from tollway.testing import start_simulator

    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    p = Proxy(tmp_path, auth=True)
    yield p
    p.stop()


def _openai_only(sim: Simulator, **extra: object) -> list[dict[str, object]]:
    return [{**default_providers(sim.url)[0], **extra}]


def _ask(gw: object) -> str:
    client = gw.openai()  # type: ignore[attr-defined]
    out = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    return str(out.choices[0].message.content)


def test_outbound_proxy_carries_provider_calls(
    tmp_path: Path, sim: Simulator, proxy: Proxy
) -> None:
    gw = start_gateway(
        tmp_path,
        providers=_openai_only(sim),
        plugins=["tollway_static_keys", "tollway_provider_openai"],
        env={"LW_GATEWAY_OUTBOUND_PROXY": proxy.url, "SERVER_NETCHECK_HOSTS": ""},
    )
    try:
        assert _ask(gw)
    finally:
        stop(gw.proc)
    sim_hostport = sim.url.removeprefix("http://")
    assert proxy.saw(re.escape(f"POST {sim_hostport}/v1/chat/completions"))
    logs = gw.logs()
    assert PROXY_PASSWORD not in logs
    assert f"outbound_proxy=http://{PROXY_USER}:****@127.0.0.1:{proxy.port}" in logs


def test_standard_https_proxy_variables_and_no_proxy(
    tmp_path: Path, sim: Simulator, proxy: Proxy
) -> None:
    plugins = ["tollway_static_keys", "tollway_provider_openai"]
    # The simulator is http://, so HTTP_PROXY is the one that applies (lower-case works too).
    gw = start_gateway(
        tmp_path / "a",
        providers=_openai_only(sim),
        plugins=plugins,
        env={"http_proxy": proxy.url, "SERVER_NETCHECK_HOSTS": ""},
    )
    try:
        assert _ask(gw)
    finally:
        stop(gw.proc)
    assert proxy.saw(r"POST \S+/v1/chat/completions")
    before = len(proxy.seen())
    gw = start_gateway(
        tmp_path / "b",
        providers=_openai_only(sim),
        plugins=plugins,
        env={"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1", "SERVER_NETCHECK_HOSTS": ""},
    )
    try:
        assert _ask(gw)
    finally:
        stop(gw.proc)
    time.sleep(0.5)
    assert len(proxy.seen()) == before, "NO_PROXY should have sent the call direct"


def test_provider_proxy_overrides_and_empty_means_direct(
    tmp_path: Path, sim: Simulator, proxy: Proxy
) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    plugins = ["tollway_static_keys", "tollway_provider_openai"]
    # The provider's own proxy wins over LW_GATEWAY_OUTBOUND_PROXY (which is dead here).
    gw = start_gateway(
        tmp_path / "a",
        providers=_openai_only(sim, config={"proxy": proxy.url}),
        plugins=plugins,
        env={"LW_GATEWAY_OUTBOUND_PROXY": dead_proxy, "SERVER_NETCHECK_HOSTS": ""},
    )
    try:
        assert _ask(gw)
    finally:
        stop(gw.proc)
    assert proxy.saw(r"POST \S+/v1/chat/completions")
    # "" is direct, whatever the gateway-wide settings say.
    gw = start_gateway(
        tmp_path / "b",
        providers=_openai_only(sim, config={"proxy": ""}),
        plugins=plugins,
        env={"LW_GATEWAY_OUTBOUND_PROXY": dead_proxy, "SERVER_NETCHECK_HOSTS": ""},
    )
    try:
        assert _ask(gw)
    finally:
        stop(gw.proc)


def test_proxy_down_is_a_502_naming_the_proxy(tmp_path: Path, sim: Simulator) -> None:
    port = free_port()
    dead_proxy = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"
    gw = start_gateway(
        tmp_path,
        providers=_openai_only(sim),
        plugins=["tollway_static_keys", "tollway_provider_openai"],
        env={"LW_GATEWAY_OUTBOUND_PROXY": dead_proxy, "SERVER_NETCHECK_HOSTS": ""},
    )
    try:
        with pytest.raises(openai.APIStatusError) as info:
            _ask(gw)
        assert info.value.status_code == 502
        err = info.value.body
        assert isinstance(err, dict)
        assert err["type"] == "provider_error"
        assert err["code"] == "connect_error"
        message = err["message"]
        assert f"outbound proxy http://{PROXY_USER}:****@127.0.0.1:{port}" in message
        assert "LW_GATEWAY_OUTBOUND_PROXY" in message
        assert PROXY_PASSWORD not in message
        assert PROXY_PASSWORD not in gw.logs()
    finally:
        stop(gw.proc)


def test_wrong_proxy_credentials_are_a_502_not_a_relayed_407(
    tmp_path: Path, sim: Simulator, proxy: Proxy
) -> None:
    bad = f"http://{PROXY_USER}:wrong@127.0.0.1:{proxy.port}"
    gw = start_gateway(
        tmp_path,
        providers=_openai_only(sim),
        plugins=["tollway_static_keys", "tollway_provider_openai"],
        env={"LW_GATEWAY_OUTBOUND_PROXY": bad, "SERVER_NETCHECK_HOSTS": ""},
    )
    try:
        with pytest.raises(openai.APIStatusError) as info:
            _ask(gw)
        assert info.value.status_code == 502
        assert "asked for credentials (HTTP 407)" in str(info.value.body)
        assert "wrong" not in str(info.value.body)
    finally:
        stop(gw.proc)


def test_https_upstream_goes_through_connect(tmp_path: Path, proxy: Proxy) -> None:
    """aiohttp tunnels an https:// upstream with CONNECT; the proxy sees only host:port."""

    async def go() -> str:
        http = UpstreamHTTP(2, 5, egress=Egress(proxy=proxy.url))
        try:
            # Nothing speaks TLS on this port: the tunnel opens (or not), the call fails, but
            # the proxy was asked to CONNECT, which is what is checked here.
            port = free_port()
            with pytest.raises(Exception) as info:
                await http.post(f"https://127.0.0.1:{port}/v1/x", {}, b"{}")
            return f"{port} {info.value}"
        finally:
            await http.close()

    port, _, message = asyncio.run(go()).partition(" ")
    assert proxy.saw(re.escape(f"CONNECT 127.0.0.1:{port}"))
    assert PROXY_PASSWORD not in message


def test_ssrf_guard_still_checks_the_target_through_a_proxy(proxy: Proxy) -> None:
    """Outside ENVIRONMENT=local a proxied call to a host that resolves to loopback is refused
    before anything reaches the proxy (which would resolve it itself)."""

    async def go() -> str:
        http = UpstreamHTTP(2, 5, public_only=True, egress=Egress(proxy=proxy.url))
        try:
            from tollway import UpstreamError

            with pytest.raises(UpstreamError) as info:
                await http.post("http://localhost:9/v1/x", {}, b"{}")
            return str(info.value)
        finally:
            await http.close()

    message = asyncio.run(go())
    assert "SSRF guard" in message
    assert not proxy.saw(".*", within=0.5)


def test_proxy_settings_precedence_and_masking() -> None:
    egress = Egress(
        proxy=None,
        https_proxy="http://u:p@corp:3128",
        http_proxy="http://plain:8080",
        no_proxy="internal.example,.svc",
    )
    assert egress.choose("https://api.openai.com/v1").url == "http://u:p@corp:3128"
    assert egress.choose("https://api.openai.com/v1").source == "HTTPS_PROXY"
    assert egress.choose("http://sim:80/v1").url == "http://plain:8080"
    assert egress.choose("https://internal.example/v1").url is None
    assert egress.choose("https://cp.ns.svc/v1").url is None
    assert egress.for_provider("https://a/v1", {"proxy": ""}).url is None
    assert egress.for_provider("https://a/v1", {"proxy": None}).url is None
    assert egress.for_provider("https://a/v1", {"proxy": "http://p:1"}).url == "http://p:1"
    wide = Egress(proxy="http://one:1", https_proxy="http://corp:3128", no_proxy="*")
    assert wide.choose("https://api.openai.com").url == "http://one:1"  # NO_PROXY: standard only
    assert mask_url("http://u:p@h:1") == "http://u:****@h:1"
    assert mask_url("http://token@h") == "http://****@h"
    assert mask_url("http://h:1") == "http://h:1"
    assert proxy_problem("socks5://h:1") is not None
    assert proxy_problem("http://h:1/path") is not None
    assert proxy_problem("") is None


def test_config_reads_proxies_and_config_show_masks_them() -> None:
    env = {
        "LW_GATEWAY_OUTBOUND_PROXY": "http://u:topsecret@proxy:3128",
        "https_proxy": "http://lower:pw1@corp:3128",
        "HTTPS_PROXY": "http://upper:pw2@corp:3128",
        "NO_PROXY": ".internal",
        "SERVER_NETCHECK_HOSTS": "",
    }
    settings = load_settings(env)
    assert settings.outbound.proxy == "http://u:topsecret@proxy:3128"
    assert settings.outbound.https_proxy == "http://lower:pw1@corp:3128"  # lower-case wins
    assert settings.outbound.no_proxy == ".internal"
    assert settings.server.netcheck_hosts == []
    shown = str(settings.masked())
    for secret in ("topsecret", "pw1", "pw2"):
        assert secret not in shown
    assert "http://u:****@proxy:3128" in shown
    from tollway.config import ConfigError

    with pytest.raises(ConfigError, match=r"outbound.proxy \(LW_GATEWAY_OUTBOUND_PROXY\)"):
        load_settings({"LW_GATEWAY_OUTBOUND_PROXY": "socks5://h:1"})
