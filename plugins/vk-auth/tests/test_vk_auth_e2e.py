"""End to end with the real control plane: gateway, control plane, simulator, Redis — processes.

Keys and providers are created with the ``tollway`` CLI (subprocesses) against the store the
control plane serves; clients are the official openai SDK (``max_retries=0``).

* embedded: one gateway process serving its own control plane (store in its data dir);
* standalone: ``tollway control-plane`` + two gateways with ``LW_GATEWAY_BASE_URL`` sharing one
  Redis L2; the control plane is killed and restarted under them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tollway.testing import free_port, stop

pytest.importorskip(
    "tollway_control_plane",
    reason="tollway-control-plane is not installed: these tests need the real control plane "
    "(pip install -e plugins/control-plane)",
)

pytestmark = pytest.mark.slow  # subprocesses: CLI commands, control plane, gateways

REDIS_URL = "redis://127.0.0.1:6379/0"


# --- processes (after tests/conftest.py) ----------------------------------------------------


class Proc:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def logs(self) -> str:
        return self.log.read_text()

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=20)

    def chat(self, key: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=20,
        )


def launch(args: list[str], env: dict[str, str], log: Path, url: str) -> Proc:
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", *args], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    return Proc(proc, url, log)


def wait_up(p: Proc, ready: str, timeout: float = 30) -> Proc:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise AssertionError(f"{p.log.name}: exited with {p.proc.returncode}:\n{p.logs()}")
        try:
            if httpx.get(f"{p.url}{ready}", timeout=1).status_code == 200:
                return p
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop(p.proc)
    raise AssertionError(f"{p.log.name}: not ready after {timeout} s:\n{p.logs()}")


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LW_", "GATEWAY_REDIS"))}
    env.update(
        {"ENVIRONMENT": "local", "TOLLWAY_DATA_DIR": str(data_dir), "LOG_FORMAT": "json", **extra}
    )
    return env


def tollway(env: dict[str, str], *args: str) -> Any:
    return tollway_parallel([(env, list(args))])[0]


def tollway_parallel(calls: list[tuple[dict[str, str], list[str]]]) -> list[Any]:
    """Run several ``tollway`` CLI commands at once (each costs an interpreter start)."""
    procs = [
        (
            args,
            subprocess.Popen(
                [sys.executable, "-m", "tollway", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for env, args in calls
    ]
    results = []
    for args, proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"tollway {' '.join(args)} failed:\n{out}\n{err}"
        results.append(json.loads(out) if "--json" in args else out)
    return results


def launch_gateway(tmp: Path, name: str, env: dict[str, str]) -> Proc:
    port = free_port()
    env = {**env, "SERVER_ADDR": f"127.0.0.1:{port}"}
    return launch(["serve"], env, tmp / f"{name}.log", f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway_simulator", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    match = re.search(r"listening on (http://\S+)", proc.stdout.readline())
    assert match, "the simulator did not start"
    yield match.group(1)
    stop(proc)


def new_keys(env: dict[str, str], *names: str) -> dict[str, tuple[str, str]]:
    docs = tollway_parallel(
        [(env, ["virtual-keys", "create", "--name", n, "--json"]) for n in names]
    )
    return {n: (d["id"], d["secret"]) for n, d in zip(names, docs, strict=True)}


def add_provider(env: dict[str, str], sim: str) -> str:
    doc = tollway(
        env,
        "model-providers",
        "create",
        "--type",
        "openai",
        "--name",
        "sim-openai",
        "--base-url",
        f"{sim}/v1",
        "--api-key",
        "sk-sim-upstream",
        "--json",
    )
    return str(doc["id"])


def wait_status(gw: Proc, key: str, status: int, within: float) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        r = gw.chat(key)
        if r.status_code == status or time.monotonic() >= deadline:
            return r
        time.sleep(0.05)


# --- embedded ----------------------------------------------------------------------------


class Embedded:
    def __init__(self, gw: Proc, env: dict[str, str], keys: dict[str, tuple[str, str]]) -> None:
        self.gw, self.env, self.keys = gw, env, keys


@pytest.fixture(scope="module")
def embedded(sim: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    tmp = tmp_path_factory.mktemp("vk-embedded")
    env = base_env(tmp / "data")
    add_provider(env, sim)  # also creates the store and the data dir's secrets
    gw = launch_gateway(tmp, "gateway", env)
    try:
        keys = new_keys(env, "sdk", "revoke", "toggle", "rotate")
        wait_up(gw, "/startupz")
        yield Embedded(gw, env, keys)
    finally:
        stop(gw.proc)


def test_openai_sdk_with_a_control_plane_key(embedded: Embedded) -> None:
    gw = embedded.gw
    _, secret = embedded.keys["sdk"]
    out = gw.openai(secret).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert out.choices[0].message.content
    assert gw.chat(secret).status_code == 200  # an L1 hit
    metrics = httpx.get(f"{gw.url}/metrics", timeout=5)
    if metrics.status_code == 200:  # served by tollway-telemetry when installed
        assert 'gateway_auth_cache_hits_total{tier="l1"}' in metrics.text
        assert 'gateway_auth_cache_hits_total{tier="miss"}' in metrics.text
    ready = httpx.get(f"{gw.url}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["control_plane"] == "ok" and checks["auth_cache_bootstrap"] == "ok"


def test_unknown_key_is_401(embedded: Embedded) -> None:
    from tollway.keys import mint_key

    with pytest.raises(openai.AuthenticationError) as info:
        embedded.gw.openai(mint_key("live")).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 401


def test_key_changes_reach_the_running_gateway(embedded: Embedded) -> None:
    """revoke → 401 within 2 s; disable → 401, enable → 200; rotate → old and new both work."""
    gw, env = embedded.gw, embedded.env
    revoked_id, revoked = embedded.keys["revoke"]
    toggled_id, toggled = embedded.keys["toggle"]
    rotated_id, old = embedded.keys["rotate"]
    for key in (revoked, toggled, old):
        assert gw.chat(key).status_code == 200  # cached now
    _, _, rotation = tollway_parallel(
        [
            (env, ["virtual-keys", "revoke", revoked_id]),
            (env, ["virtual-keys", "disable", toggled_id]),
            (env, ["virtual-keys", "rotate", rotated_id, "--json"]),
        ]
    )
    r = wait_status(gw, revoked, 401, within=2.0)
    assert r.status_code == 401, f"revoked key still answered {r.status_code} after 2 s"
    assert r.json()["error"]["type"] == "invalid_api_key"
    assert r.json()["error"]["code"] == "key_revoked"
    r = wait_status(gw, toggled, 401, within=2.0)
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_disabled"

    new = rotation["secret"]
    assert new != old
    for key in (old, new, old):
        out = gw.openai(key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert out.choices

    tollway(env, "virtual-keys", "enable", toggled_id)
    assert wait_status(gw, toggled, 200, within=2.0).status_code == 200
    embedded.keys["rotate-new"] = (rotated_id, new)


def test_no_secret_in_the_embedded_gateway_log(embedded: Embedded) -> None:
    text = embedded.gw.logs()
    for _, secret in embedded.keys.values():
        assert secret not in text
    assert "sk-sim-upstream" not in text


# --- standalone control plane, two gateways, Redis L2 ---------------------------------------


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_standalone_control_plane_outage_and_recovery(sim: str, tmp_path: Path) -> None:
    shared = {
        "LW_VIRTUAL_KEY_PEPPER": secrets.token_urlsafe(32),
        "LW_GATEWAY_INTERNAL_SECRET": secrets.token_urlsafe(32),
        "LW_GATEWAY_JWT_SECRET": secrets.token_urlsafe(32),
    }
    cp_port = free_port()
    cp_url = f"http://127.0.0.1:{cp_port}"
    cp_env = base_env(tmp_path / "cp-data", **shared)
    prefix = f"test:vkauth:e2e:{uuid.uuid4().hex[:10]}:"
    gw_env = base_env(
        tmp_path / "gw-data",
        **shared,
        LW_GATEWAY_BASE_URL=cp_url,
        GATEWAY_REDIS_URL=REDIS_URL,
        LW_GATEWAY_AUTH_CACHE_REDIS_PREFIX=prefix,
        LW_GATEWAY_AUTH_CACHE_SOFT_TTL="1s",
    )
    cp_args = ["control-plane", "--host", "127.0.0.1", "--port", str(cp_port)]
    cp_log = tmp_path / "control-plane.log"
    add_provider(cp_env, sim)
    cp = launch(cp_args, cp_env, cp_log, cp_url)
    lone_env = {k: v for k, v in gw_env.items() if not k.startswith("GATEWAY_REDIS")}
    a = launch_gateway(tmp_path, "gateway-a", gw_env)
    b = launch_gateway(tmp_path, "gateway-b", gw_env)
    lone = launch_gateway(tmp_path, "gateway-no-redis", lone_env)  # never sees a key
    gateways = [a, b, lone]
    try:
        keys = new_keys(cp_env, "warm", "cold")
        (warm_vk, warm), (_, cold) = keys["warm"], keys["cold"]
        for p, ready in ((cp, "/api/health"), (a, "/startupz"), (b, "/startupz")):
            wait_up(p, ready)
        wait_up(lone, "/startupz")
        assert (
            a.openai(warm)
            .chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            .choices
        )
        time.sleep(0.2)  # the L2 write is off the request path

        stop(cp.proc, signal.SIGKILL)
        time.sleep(1.1)  # past the 1 s soft TTL: the next request must try to refresh

        # a cached key keeps working on the gateway that cached it …
        assert (
            a.openai(warm)
            .chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "still there?"}]
            )
            .choices
        )
        logs = a.logs()
        assert "auth_cache_refresh_transport_failure" in logs
        assert f"vk_id={warm_vk}" in logs and "error_class=transport" in logs
        assert "auth_cache_serve_stale" in logs
        # … and on a replica that never saw it, from the Redis L2 it warmed
        assert b.chat(warm).status_code == 200

        # a key no gateway has seen cannot be checked: 503, retryable
        with pytest.raises(openai.APIStatusError) as info:
            a.openai(cold).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 503
        assert info.value.response.json()["error"]["code"] == "control_plane_unavailable"
        assert info.value.response.headers["retry-after"] == "5"

        # warm cache: readiness stays 200 and says why it is degraded
        ready = httpx.get(f"{a.url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["control_plane"].startswith("degraded:")

        # a gateway with no cached key (and no L2) cannot serve anyone: not ready
        ready = httpx.get(f"{lone.url}/readyz", timeout=5)
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["control_plane"].startswith("error:")

        # the control plane comes back: the cold key works, the gateways recover
        cp = wait_up(launch(cp_args, cp_env, cp_log, cp_url), "/api/health")
        assert wait_status(a, cold, 200, within=8.0).status_code == 200
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if httpx.get(f"{lone.url}/readyz", timeout=5).status_code == 200:
                break
            time.sleep(0.1)
        assert httpx.get(f"{lone.url}/readyz", timeout=5).status_code == 200

        for gw in gateways:
            text = gw.logs()
            for secret in (warm, cold):
                assert secret not in text, f"a key secret leaked into {gw.log.name}"
            assert "sk-sim-upstream" not in text
    finally:
        for gw in gateways:
            stop(gw.proc)
        stop(cp.proc)
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        leftover = list(client.scan_iter(match=f"{prefix}*"))
        if leftover:
            client.delete(*leftover)
        client.close()


def test_bootstrap_all_keys_serves_first_requests_from_l1(sim: str, tmp_path: Path) -> None:
    """GATEWAY_CACHE_BOOTSTRAP_ALL_KEYS=true: every active key is in L1 before readiness, so a
    key's first request makes no resolve-key call, and keeps working with the control plane
    gone. Revoked keys are not warmed."""
    shared = {
        "LW_VIRTUAL_KEY_PEPPER": secrets.token_urlsafe(32),
        "LW_GATEWAY_INTERNAL_SECRET": secrets.token_urlsafe(32),
        "LW_GATEWAY_JWT_SECRET": secrets.token_urlsafe(32),
    }
    cp_port = free_port()
    cp_url = f"http://127.0.0.1:{cp_port}"
    cp_env = base_env(tmp_path / "cp-data", **shared)
    add_provider(cp_env, sim)
    keys = new_keys(cp_env, "first", "second", "gone")
    tollway(cp_env, "virtual-keys", "revoke", keys["gone"][0])
    cp = launch(
        ["control-plane", "--host", "127.0.0.1", "--port", str(cp_port)],
        cp_env,
        tmp_path / "control-plane.log",
        cp_url,
    )
    gw_env = base_env(
        tmp_path / "gw-data",
        **shared,
        LW_GATEWAY_BASE_URL=cp_url,
        GATEWAY_CACHE_BOOTSTRAP_ALL_KEYS="true",
    )
    gw = launch_gateway(tmp_path, "gateway", gw_env)
    try:
        wait_up(cp, "/api/health")
        wait_up(gw, "/readyz")
        checks = httpx.get(f"{gw.url}/readyz", timeout=5).json()["checks"]
        assert checks["auth_cache_bootstrap"] == "ok: 2 key(s) warmed", checks
        first_vk, first = keys["first"]
        assert gw.chat(first).status_code == 200
        served = [line for line in cp.logs().splitlines() if "resolve_key_served" in line]
        assert not [line for line in served if first_vk in line], served
        assert "keys_page_served keys=2" in cp.logs()

        stop(cp.proc, signal.SIGKILL)
        _, second = keys["second"]
        assert gw.chat(second).status_code == 200  # first use, control plane down
        assert gw.chat(first).status_code == 200
        # The revoked key was not warmed: with the control plane down it cannot be checked.
        assert gw.chat(keys["gone"][1]).status_code == 503
    finally:
        stop(gw.proc)
        stop(cp.proc)
