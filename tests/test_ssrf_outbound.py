"""The SSRF guard with real processes: a production gateway (no ``ENVIRONMENT=local``) never
connects to a guarded address — however it is spelled — named by a control-plane provider or a
key's guardrail webhook, even when the control plane stored it while running in local mode; the
two ways through (``allow_private_network`` on a config-file provider, the operator's CIDR
allowlist) reach the simulator on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tollway.testing import (
    GatewayProcess,
    Simulator,
    free_port,
    start_gateway,
    start_simulator,
    stop,
)
from tollway_control_plane.runtime import open_store

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "my secret prompt"}]}


class Listener:
    """A plain TCP server on 127.0.0.1 that records every connection and every byte."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
                with self._lock:
                    self.received += data
                # What an internal service might answer (Redis-like), were it asked.
                conn.sendall(b"-ERR internal service answer\r\n")
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


def encoded_urls(port: int) -> dict[str, str]:
    return {
        "plain": f"http://127.0.0.1:{port}/v1",
        "integer": f"http://2130706433:{port}/v1",
        "short": f"http://127.1:{port}/v1",
        "mapped": f"http://[::ffff:127.0.0.1]:{port}/v1",
        "dot": f"http://localhost.:{port}/v1",
        "hex": f"http://0x7f.1:{port}/v1",
    }


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


def _chat(url: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=HELLO,
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )


# --- a production gateway, its embedded control plane written in local mode --------------


@pytest.fixture(scope="module")
def sim3() -> Iterator[Simulator]:
    """A simulator on 127.0.0.3, the one loopback address the production gateway's operator
    allowlist lets through (the guarded listener is on 127.0.0.1)."""
    try:
        s = start_simulator("--host", "127.0.0.3")
    except AssertionError:
        pytest.skip("cannot bind 127.0.0.3 here")
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("production")
    gw = start_gateway(
        tmp,
        env={"ENVIRONMENT": "production", "GATEWAY_OUTBOUND_ALLOW_CIDRS": "127.0.0.3/32"},
        keys=[],
        plugins=[
            "tollway-control-plane",
            "tollway-vk-auth",
            "tollway-provider-openai",
            "tollway-guardrails",
        ],
    )
    yield gw
    stop(gw.proc)


def test_bundle_providers_on_guarded_addresses_are_never_called(
    production: GatewayProcess, listener: Listener
) -> None:
    # The store opened as a control plane running with ENVIRONMENT=local would open it: these
    # writes pass its checks, and a production gateway must still refuse them.
    store, _ = open_store(production.data_dir, {}, environment="local")
    secrets: dict[str, str] = {}
    try:
        for name, url in encoded_urls(listener.port).items():
            project = store.create_project(f"p-{name}")
            store.create_provider(
                type="openai",
                name=f"internal-{name}",
                api_key="sk-internal",
                base_url=url,
                scope=f"project:{project.id}",
            )
            _, secrets[name] = store.create_key(name=f"k-{name}", scope=f"project:{project.id}")
        # A chain of several refused providers: every attempt fails, none is skipped.
        project = store.create_project("p-chain")
        for i, url in enumerate(encoded_urls(listener.port).values()):
            store.create_provider(
                type="openai", name=f"chain-{i}", base_url=url, scope=f"project:{project.id}"
            )
        _, chain_secret = store.create_key(name="k-chain", scope=f"project:{project.id}")
    finally:
        store.close()

    for name, secret in secrets.items():
        r = _chat(production.url, secret)
        assert r.status_code == 502, (name, r.text)
        error = r.json()["error"]
        assert error["type"] == "provider_error", (name, error)
        assert error["code"] == "outbound_refused", (name, error)
        assert "SSRF guard" in error["message"] and "loopback/private" in error["message"]
        assert "GATEWAY_OUTBOUND_ALLOW_CIDRS" in error["message"]
    r = _chat(production.url, chain_secret)
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "fallback_exhausted"
    assert error["message"].count("outbound_refused") == len(encoded_urls(listener.port))
    assert listener.connections == 0 and listener.received == b""


def test_guardrail_webhooks_on_guarded_addresses_are_never_called(
    production: GatewayProcess, listener: Listener
) -> None:
    store, _ = open_store(production.data_dir, {}, environment="local")
    secrets: dict[str, str] = {}
    try:
        project = store.create_project("webhooks")
        store.create_provider(
            type="openai",
            name="public",
            base_url="https://api.example.com/v1",
            scope=f"project:{project.id}",
        )
        for name, url in encoded_urls(listener.port).items():
            config = {"guardrails": {"pre": [{"evaluator": "webhook", "url": url}]}}
            _, secrets[name] = store.create_key(
                name=f"w-{name}", scope=f"project:{project.id}", config=config
            )
    finally:
        store.close()
    for name, secret in secrets.items():
        r = _chat(production.url, secret)
        assert r.status_code == 503, (name, r.text)
        error = r.json()["error"]
        assert error["code"] == "guardrail_unavailable", (name, error)
        assert "refused by the SSRF guard" in error["message"], (name, error)
        assert "internal service answer" not in r.text
    assert listener.connections == 0 and listener.received == b""


def test_a_refused_provider_is_a_failed_attempt_and_the_chain_goes_on(
    production: GatewayProcess, listener: Listener, sim3: Simulator
) -> None:
    """User info in a stored base URL (a row written before the store refused it) and a guarded
    address each fail one attempt; the next provider — on the operator's allowlist — answers."""
    store, _ = open_store(production.data_dir, {}, environment="local")
    try:
        project = store.create_project("chain-ok")
        scope = f"project:{project.id}"
        userinfo = store.create_provider(
            type="openai",
            name="with-password",
            base_url="https://api.example.com/v1",
            scope=scope,
            priority=0,
        )
        with store.db.transaction() as tx:
            tx.execute(
                "UPDATE model_providers SET base_url = ? WHERE id = ?",
                (f"http://bob:hunter2@127.0.0.3:{sim3.url.rsplit(':', 1)[1]}/v1", userinfo.id),
            )
        store.create_provider(
            type="openai",
            name="internal",
            base_url=f"http://127.1:{listener.port}/v1",
            scope=scope,
            priority=1,
        )
        store.create_provider(
            type="openai",
            name="allowed",
            api_key="sk-allowed",
            base_url=f"{sim3.url}/v1",
            scope=scope,
            priority=2,
        )
        _, secret = store.create_key(name="chain-ok", scope=scope)
    finally:
        store.close()
    before = len(sim3.requests())
    r = _chat(production.url, secret)
    assert r.status_code == 200, r.text
    assert r.headers["x-langwatch-fallback-count"] == "2"
    assert len(sim3.requests()) == before + 1  # only the allowed provider's call
    assert listener.connections == 0


# --- the ways through ------------------------------------------------------------------------


def _loopback_provider(sim: Simulator, **extra: object) -> dict[str, object]:
    port = sim.url.rsplit(":", 1)[1]
    return {
        "name": "vllm",
        "type": "custom",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "api_key": "unused",
        **extra,
    }


def test_allow_private_network_on_a_config_file_provider(sim: Simulator, tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path,
        env={"ENVIRONMENT": "production"},
        providers=[_loopback_provider(sim, allow_private_network=True)],
        plugins=["tollway_static_keys", "tollway_provider_openai"],
    )
    try:
        r = _chat(gw.url, gw.secret())
        assert r.status_code == 200, r.text
    finally:
        stop(gw.proc)


def test_the_cidr_allowlist(sim: Simulator, tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path,
        env={"ENVIRONMENT": "production", "GATEWAY_OUTBOUND_ALLOW_CIDRS": "127.0.0.0/8"},
        providers=[_loopback_provider(sim)],
        plugins=["tollway_static_keys", "tollway_provider_openai"],
    )
    try:
        r = _chat(gw.url, gw.secret())
        assert r.status_code == 200, r.text
    finally:
        stop(gw.proc)


def test_without_either_the_config_file_is_refused(sim: Simulator, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"providers\[0\]\.base_url: .*allow_private_network"):
        start_gateway(
            tmp_path,
            env={"ENVIRONMENT": "production"},
            providers=[_loopback_provider(sim)],
            plugins=["tollway_static_keys", "tollway_provider_openai"],
        )
    assert free_port()  # the harness is still usable


def test_control_the_listener_is_reachable_when_the_guard_is_off(tmp_path: Path) -> None:
    """Without the guard (ENVIRONMENT=local) the same URLs do reach the listener: the tests
    above see nothing because of the guard, not because the listener is unreachable."""
    server = Listener()
    try:
        urls = encoded_urls(server.port)
        providers = [
            {"name": name, "type": "openai", "base_url": url, "api_key": "sk-x", "priority": i}
            for i, (name, url) in enumerate(urls.items())
        ]
        gw = start_gateway(
            tmp_path,
            env={"ENVIRONMENT": "local"},
            providers=providers,
            plugins=["tollway_static_keys", "tollway_provider_openai"],
        )
        try:
            r = _chat(gw.url, gw.secret())
            assert r.status_code == 502, r.text
        finally:
            stop(gw.proc)
        assert server.connections >= 1
        assert b"my secret prompt" in server.received
    finally:
        server.close()
