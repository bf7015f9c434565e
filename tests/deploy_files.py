"""Reading the deployment files under deploy/ for the tests: the Dockerfile's instructions, the
compose file, and the Kubernetes overlays rendered by ``kubectl kustomize`` (or ``kustomize``).

Not a test module: tests/test_deploy.py and tests/test_deploy_run.py import it.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())

#: The gateway's three secrets (tollway.secrets.NAMES), written for a render.
GATEWAY_SECRETS = ("LW_VIRTUAL_KEY_PEPPER", "LW_GATEWAY_INTERNAL_SECRET", "LW_GATEWAY_JWT_SECRET")

# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction, continuation lines joined, comments out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + "\n"
            continue
        text = (pending + line).strip()
        pending = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage (a stage starts at its ``FROM``)."""
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def dockerfile_env() -> dict[str, str]:
    """Every ``ENV`` name and value, all stages."""
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for item in shlex.split(rest.replace("\n", " ")):
                name, _, value = item.partition("=")
                env[name] = value
    return env


# --- compose ------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def compose_variables() -> set[str]:
    """The variables compose.yaml interpolates (``${NAME…}``)."""
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (DEPLOY / "compose.yaml").read_text()))


# --- Kubernetes -----------------------------------------------------------------------------------


def renderer() -> list[str] | None:
    """The command that renders a kustomization: ``kubectl kustomize`` or ``kustomize build``."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def need_renderer() -> list[str]:
    """The renderer, or skip; in CI (where .ci/run installs kubectl) its absence fails."""
    command = renderer()
    if command is None:
        reason = (
            "neither kubectl nor kustomize is on PATH: install kubectl (it has kustomize) to "
            "render deploy/kubernetes (.ci/run installs it in CI)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return command


def secret_env_files(tree: Path) -> None:
    """Write the env files the kustomizations read (not in git) with fresh values."""
    lines = [f"{name}={secrets.token_hex(32)}" for name in GATEWAY_SECRETS]
    (tree / "base" / "gateway-secrets.env").write_text("\n".join(lines) + "\n")
    example = tree / "overlays" / "standalone" / "backends.env.example"
    shutil.copy(example, example.with_suffix(""))


_rendered: dict[str, list[dict[str, Any]]] = {}


def render(overlay: str, tmp: Path) -> list[dict[str, Any]]:
    """The objects of ``overlay``, rendered from a copy of deploy/kubernetes with its env files."""
    if overlay not in _rendered:
        command = need_renderer()
        tree = tmp / "kubernetes"
        if not tree.exists():
            shutil.copytree(KUBERNETES, tree)
            secret_env_files(tree)
        done = subprocess.run(
            [*command, str(tree / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{' '.join(command)} {overlay} failed:\n{done.stderr}"
        _rendered[overlay] = [d for d in yaml.safe_load_all(done.stdout) if d]
    return _rendered[overlay]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for o in of_kind(objects, kind):
        if o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind} {name!r} in {[o['metadata']['name'] for o in objects]}")


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(deployment, container)`` for every container of every Deployment."""
    for deployment in of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal ``env`` values (not those from a Secret)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
