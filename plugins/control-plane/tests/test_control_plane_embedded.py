"""The embedded default: ``tollway serve`` serves the control plane itself (no
``LW_GATEWAY_BASE_URL``), its store in the gateway's data dir, secrets generated there."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from control_plane_helpers import (
    SECRETS_ENV,
    ControlPlaneProcess,
    free_port,
    stop,
    tollway_json,
)

from tollway.secrets import load_gateway_secrets
from tollway.signing import verify
from tollway_control_plane.runtime import open_store


def _gateway_env(data_dir: Path, port: int, plugins: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LW_", "TOLLWAY_")) and k not in SECRETS_ENV
    }
    env.update(
        {
            "TOLLWAY_DATA_DIR": str(data_dir),
            "TOLLWAY_PLUGINS": plugins,
            "ENVIRONMENT": "local",
            "SERVER_ADDR": f"127.0.0.1:{port}",
            "LOG_FORMAT": "json",
        }
    )
    return env


def _start_gateway(tmp: Path, plugins: str) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    port = free_port()
    env = _gateway_env(tmp / "data", port, plugins)
    log = tmp / "gateway.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/startupz", timeout=1).status_code == 200:
                return proc, url, env
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop(proc)
    raise AssertionError(f"gateway not ready:\n{log.read_text()}")


_HAVE_VK_AUTH = (
    importlib.util.find_spec("tollway_vk_auth") is not None
    and importlib.util.find_spec("tollway_simulator") is not None
    and importlib.util.find_spec("tollway_provider_openai") is not None
)


class Embedded:
    def __init__(self, url: str, data_dir: Path, env: dict[str, str], sim_url: str | None) -> None:
        self.url = url
        self.data_dir = data_dir
        self.env = env
        self.sim_url = sim_url


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """One gateway serving its own control plane — with tollway-vk-auth, the OpenAI adapter
    and the simulator as upstream when they are installed."""
    tmp = tmp_path_factory.mktemp("embedded")
    sim: subprocess.Popen[str] | None = None
    sim_url = None
    plugins = "tollway-control-plane"
    if _HAVE_VK_AUTH:
        sim = subprocess.Popen(
            [sys.executable, "-m", "tollway_simulator", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sim.stdout is not None
        match = re.search(r"listening on (http://\S+)", sim.stdout.readline())
        assert match, "the simulator did not start"
        sim_url = match.group(1)
        plugins += ",tollway-vk-auth,tollway-provider-openai"
    try:
        proc, url, env = _start_gateway(tmp, plugins)
        try:
            yield Embedded(url, tmp / "data", env, sim_url)
        finally:
            stop(proc)
    finally:
        if sim is not None:
            stop(sim)


def test_gateway_serves_its_own_control_plane(gateway: Embedded) -> None:
    url, data_dir, env = gateway.url, gateway.data_dir, gateway.env
    assert httpx.get(f"{url}/api/health").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["checks"]["control_plane_store"] == "ok"
    assert (data_dir / "tollway.db").exists()
    secrets = load_gateway_secrets(data_dir, {}, generate=False)
    assert secrets.source == "generated"

    # The CLI writes the gateway's store (same data dir, same generated secrets).
    key = tollway_json(data_dir, "virtual-keys", "create", "--name", "embedded", env=env)
    cp = ControlPlaneProcess(None, url, data_dir, data_dir / "none")  # type: ignore[arg-type]
    path = "/api/internal/gateway/resolve-key"
    body = orjson.dumps({"key_presented": key["secret"], "gateway_node_id": "self"})
    response = cp.internal("POST", path, body, secret=secrets.internal)
    assert response.status_code == 200, response.text
    verify(secrets.internal, "POST", path, response.headers, response.content)
    assert response.json()["vk_id"] == key["id"]
    # Unsigned requests are refused here too.
    assert httpx.post(f"{url}{path}", content=body).status_code == 401


@pytest.mark.skipif(
    not _HAVE_VK_AUTH, reason="needs tollway-vk-auth, tollway-provider-openai, tollway-simulator"
)
def test_end_to_end_with_vk_auth(gateway: Embedded) -> None:
    """A provider and a key written to the store → the gateway (vk-auth ↔ embedded control
    plane) serves an OpenAI SDK call through the simulator with the stored credential; a
    revoke refuses the key within ~1 s (change feed)."""
    import openai

    # The store, opened as the CLI opens it (same data dir, generated secrets).
    store, _ = open_store(gateway.data_dir, gateway.env, environment="local")
    try:
        store.create_provider(
            type="openai",
            name="sim",
            api_key="sk-upstream-from-store",
            base_url=f"{gateway.sim_url}/v1",
        )
        key, secret = store.create_key(name="e2e")
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        seen = httpx.get(f"{gateway.sim_url}/_sim/requests").json()[-1]
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers.get("authorization") == "Bearer sk-upstream-from-store"
        store.revoke_key(key.id)
    finally:
        store.close()
    revoked = time.monotonic()
    while True:
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked < 3, "the revoked key still works"
        time.sleep(0.05)
