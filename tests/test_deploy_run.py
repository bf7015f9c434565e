"""The deployment files against running Tollway processes.

- The standalone overlay's environment (its literal values, the secrets filled in, the service
  addresses swapped for loopback ones) starts a real ``tollway control-plane`` and a real
  ``tollway serve``, and every probe path of the manifests, compose.yaml and the Dockerfile
  answers 200 on the process it is aimed at.
- Where a Docker engine answers (or ``TOLLWAY_TEST_DOCKER=1`` demands one), the image builds
  from deploy/Dockerfile and its demo answers ``/readyz`` (docs/testing-plugins.md).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_files import (
    DEPLOY,
    GATEWAY_SECRETS,
    ROOT,
    compose,
    containers,
    dockerfile_stages,
    plain_env,
    render,
)

from tollway.testing import GatewayProcess, start_gateway, start_simulator, stop


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _probe_paths(objects: list[dict[str, Any]], component: str) -> set[str]:
    paths = set()
    for deployment, container in containers(objects):
        if deployment["metadata"]["name"] == component:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                paths.add(container[probe]["httpGet"]["path"])
    assert paths, component
    return paths


def _healthcheck_path(test: list[str] | str) -> str:
    text = test if isinstance(test, str) else " ".join(test)
    found = re.search(r"http://127\.0\.0\.1:\d+(/[\w/]+)", text)
    assert found, test
    return found.group(1)


class Stack:
    def __init__(self, cp_url: str, gateway: GatewayProcess) -> None:
        self.cp_url = cp_url
        self.gateway = gateway


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A control plane and a gateway started with the standalone overlay's environment."""
    tmp = tmp_path_factory.mktemp("deploy-run")
    objects = render("standalone", tmp)
    by_name = {d["metadata"]["name"]: c for d, c in containers(objects)}
    secrets_env = {name: secrets.token_hex(32) for name in GATEWAY_SECRETS}

    cp_env = {k: v for k, v in os.environ.items() if not k.startswith(("LW_", "TOLLWAY_"))}
    cp_env.update(plain_env(by_name["tollway-control-plane"]))
    cp_env.update(secrets_env)
    # The store: SQLite in a temporary data dir instead of the overlay's PostgreSQL; the config
    # file: the ConfigMap's, as the pods see it.
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    config = tmp / "tollway.toml"
    config.write_text(config_map["data"]["tollway.toml"])
    cp_env["TOLLWAY_DATA_DIR"] = str(tmp / "cp")
    cp_env["TOLLWAY_CONFIG"] = str(config)
    args = by_name["tollway-control-plane"]["args"]
    args = [*args[: args.index("--host")], "--host", "127.0.0.1", "--port", "0"]
    log = tmp / "control-plane.log"
    with log.open("wb") as fh:
        cp = subprocess.Popen(
            [sys.executable, "-m", "tollway", *args], env=cp_env, stdout=fh, stderr=fh
        )
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            assert cp.poll() is None, f"control plane exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"control plane silent:\n{log.read_text()}"
            found = re.search(r"listening on (http://\S+)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        gw_env = plain_env(by_name["tollway-gateway"])
        # Loopback addresses for the cluster's; the rest as the Deployment sets it.
        gw_env.update(secrets_env, LW_GATEWAY_BASE_URL=url)
        for name in ("SERVER_ADDR", "TOLLWAY_DATA_DIR", "TOLLWAY_CONFIG"):
            gw_env.pop(name)
        gateway = start_gateway(tmp / "gw", env=gw_env, keys=[])
        try:
            yield Stack(url, gateway)
        finally:
            stop(gateway.proc)
    finally:
        stop(cp)


def test_gateway_probe_paths_answer(stack: Stack, tmp_path: Path) -> None:
    objects = render("standalone", tmp_path)
    paths = _probe_paths(objects, "tollway-gateway") | _probe_paths(
        render("embedded", tmp_path), "tollway-gateway"
    )
    for name in ("gateway-1", "gateway-2"):
        paths.add(_healthcheck_path(compose()["services"][name]["healthcheck"]["test"]))
    (healthcheck,) = [rest for word, rest in dockerfile_stages()[-1] if word == "HEALTHCHECK"]
    paths.add(_healthcheck_path(healthcheck))
    assert paths == {"/startupz", "/readyz", "/healthz"}
    for path in sorted(paths):
        assert _status(stack.gateway.url + path) == 200, (path, stack.gateway.logs())
    # It is the standalone shape: the gateway uses the control plane, not an embedded store.
    with urllib.request.urlopen(stack.gateway.url + "/readyz", timeout=5) as resp:
        checks = resp.read().decode()
    assert '"control_plane":"ok"' in checks and "control_plane_store" not in checks


def test_embedded_overlay_environment_serves_its_own_control_plane(tmp_path: Path) -> None:
    """The embedded overlay's environment: the gateway serves the store itself, and its probe
    paths answer."""
    objects = render("embedded", tmp_path)
    ((_, container),) = list(containers(objects))
    env = plain_env(container)
    env.update({name: secrets.token_hex(32) for name in GATEWAY_SECRETS})
    for name in ("SERVER_ADDR", "TOLLWAY_DATA_DIR", "TOLLWAY_CONFIG"):
        env.pop(name)
    gateway = start_gateway(tmp_path / "gw", env=env, keys=[])
    try:
        for path in sorted(_probe_paths(objects, "tollway-gateway")):
            assert _status(gateway.url + path) == 200, (path, gateway.logs())
        with urllib.request.urlopen(gateway.url + "/readyz", timeout=5) as resp:
            assert '"control_plane_store":"ok"' in resp.read().decode()
        # The secrets came from the environment: nothing was generated into the data dir.
        assert not (gateway.data_dir / "gateway-secrets.json").exists()
    finally:
        stop(gateway.proc)


def test_control_plane_probe_paths_answer(stack: Stack, tmp_path: Path) -> None:
    paths = _probe_paths(render("standalone", tmp_path), "tollway-control-plane")
    paths.add(_healthcheck_path(compose()["services"]["control-plane"]["healthcheck"]["test"]))
    assert paths == {"/api/health"}
    for path in paths:
        assert _status(stack.cp_url + path) == 200
    # …and a probe path the control plane does not serve would fail.
    assert _status(stack.cp_url + "/readyz") == 404


def test_simulator_healthcheck_path_answers() -> None:
    sim = start_simulator()
    try:
        path = _healthcheck_path(compose()["services"]["simulator"]["healthcheck"]["test"])
        assert _status(sim.url + path) == 200
    finally:
        stop(sim.proc)


# --- the image ----------------------------------------------------------------------------------


def _docker() -> str:
    """``docker``, when its engine answers; else skip (fail under TOLLWAY_TEST_DOCKER=1)."""
    demanded = os.environ.get("TOLLWAY_TEST_DOCKER") == "1"
    docker = shutil.which("docker")
    reason = "no docker CLI on PATH"
    if docker:
        info = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if info.returncode == 0:
            return docker
        said = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        reason = f"the Docker engine does not answer ({said})"
    if demanded:
        pytest.fail(f"TOLLWAY_TEST_DOCKER=1 but {reason}")
    pytest.skip(f"{reason}: the image build and demo run need a Docker engine")


@pytest.mark.slow
def test_image_builds_and_its_demo_answers_readyz() -> None:
    docker = _docker()
    tag = f"tollway-test:{uuid.uuid4().hex[:8]}"
    name = f"tollway-test-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        [docker, "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    try:
        user = subprocess.run(
            [docker, "image", "inspect", "--format", "{{.Config.User}}", tag],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert user.stdout.strip().split(":")[0] not in ("", "0", "root")
        run = subprocess.run(
            [docker, "run", "-d", "--name", name, tag, "serve", "--demo"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        probe = (
            "import urllib.request; "
            "print(urllib.request.urlopen('http://127.0.0.1:5563/readyz', timeout=2).status)"
        )
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(
                [docker, "exec", name, "python", "-c", probe],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if done.stdout.strip() == "200":
                break
            if time.monotonic() > deadline:
                logs = subprocess.run(
                    [docker, "logs", name], capture_output=True, text=True, timeout=30
                )
                raise AssertionError(f"/readyz never 200: {done.stderr}\n{logs.stderr}")
            time.sleep(1)
        # The image's own HEALTHCHECK agrees.
        deadline = time.monotonic() + 60
        health = ""
        while health != "healthy" and time.monotonic() < deadline:
            time.sleep(2)
            health = subprocess.run(
                [docker, "inspect", "--format", "{{.State.Health.Status}}", name],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        assert health == "healthy"
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=60)
