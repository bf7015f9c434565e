"""The admin REST API (``/api/admin``) and the CLI's remote mode over it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import orjson
import pytest
from click.testing import CliRunner
from control_plane_helpers import (
    ControlPlaneProcess,
    cli_env,
    start_control_plane,
    stop,
    tollway,
)

from tollway_control_plane.cli import add_commands
from tollway_control_plane.service import OPERATIONS

TOKEN = "admin-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    data_dir = tmp_path_factory.mktemp("admin") / "data"
    proc = start_control_plane(data_dir, env=cli_env(data_dir, TOLLWAY_ADMIN_TOKEN=TOKEN))
    yield proc
    stop(proc.proc)


@pytest.fixture
def api(cp: ControlPlaneProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{cp.url}/api/admin", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as client:
        yield client


def test_token_required(cp: ControlPlaneProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.get(f"{cp.url}/api/admin/virtual-keys", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "unauthorized"
        assert "TOLLWAY_ADMIN_TOKEN" in response.json()["error"]["message"]
    response = httpx.post(f"{cp.url}/api/admin/virtual-keys", json={"name": "x"})
    assert response.status_code == 401


def test_admin_api_is_off_without_a_token(tmp_path: Path) -> None:
    from tollway_control_plane.runtime import ControlPlane
    from tollway_control_plane.server import create_app

    cp = ControlPlane.open(tmp_path / "data", cli_env(tmp_path / "data"))
    assert cp.admin_token is None

    async def call() -> tuple[int, Any]:
        client = create_app(cp).test_client()
        response = await client.get(
            "/api/admin/virtual-keys", headers={"Authorization": "Bearer anything"}
        )
        return response.status_code, await response.get_json()

    try:
        status, body = asyncio.run(call())
    finally:
        cp.close()
    assert status == 401 and "the admin API is off" in body["error"]["message"]


def test_openapi_document(cp: ControlPlaneProcess) -> None:
    doc = httpx.get(f"{cp.url}/api/admin/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    operations = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    # The table's operations, and the request explorer's two reads.
    assert len(operations) == len(OPERATIONS) + 2
    assert ("GET", "/api/admin/requests/{id}") in operations
    assert ("POST", "/api/admin/virtual-keys/{id}/rotate") in operations
    create = doc["paths"]["/api/admin/virtual-keys"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]


def test_key_crud(api: httpx.Client) -> None:
    created = api.post("/virtual-keys", json={"name": "api", "config": {"tags": ["a"]}})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["secret"].startswith("lw_vk_live_") and key["config"] == {"tags": ["a"]}
    got = api.get(f"/virtual-keys/{key['id']}").json()
    assert "secret" not in got and got["display_prefix"] == key["secret"][:18]
    assert key["id"] in [k["id"] for k in api.get("/virtual-keys").json()]
    patched = api.patch(
        f"/virtual-keys/{key['id']}",
        json={"config": {"tags": None, "fallback": {"max_attempts": 2}}},
    ).json()
    assert patched["config"] == {"fallback": {"max_attempts": 2}} and patched["revision"] == 2
    rotated = api.post(f"/virtual-keys/{key['id']}/rotate").json()
    assert rotated["secret"] != key["secret"]
    assert api.post(f"/virtual-keys/{key['id']}/disable").json()["status"] == "disabled"
    assert api.post(f"/virtual-keys/{key['id']}/enable").json()["status"] == "active"
    assert api.post(f"/virtual-keys/{key['id']}/revoke").json()["status"] == "revoked"
    assert api.post(f"/virtual-keys/{key['id']}/enable").status_code == 409
    assert api.delete(f"/virtual-keys/{key['id']}").json() == {"id": key["id"], "deleted": True}
    missing = api.get(f"/virtual-keys/{key['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


def test_validation_errors(api: httpx.Client) -> None:
    response = api.post(
        "/virtual-keys",
        json={"name": "bad", "config": {"policy_rules": {"urls": {"deny": ["[z-a]"]}}}, "x": 1},
    )
    assert response.status_code == 422
    err = response.json()["error"]
    assert err["type"] == "validation_error" and err["problems"] == [
        "x: unknown field (known: name, scope, env, config, routing_policy_id, expires_at, "
        "principal_id)"
    ]
    response = api.post(
        "/virtual-keys",
        json={"name": "bad", "config": {"policy_rules": {"urls": {"deny": ["[z-a]"]}}}},
    )
    assert response.status_code == 422
    assert response.json()["error"]["problems"][0].startswith(
        "policy_rules.urls.deny[0]: pattern '[z-a]' is not valid RE2"
    )
    assert api.post("/virtual-keys", json={"name": 3}).json()["error"]["problems"] == [
        "name: must be a string"
    ]
    response = api.post(
        "/virtual-keys", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    assert api.post("/model-providers", json={"type": "openai"}).json()["error"]["problems"] == [
        "name: required"
    ]


def test_providers_policies_budgets(api: httpx.Client) -> None:
    provider = api.post(
        "/model-providers",
        json={
            "type": "openai",
            "name": "api-openai",
            "api_key": "sk-admin-api-secret-0001",
            "models": "gpt-4o*,o3",
        },
    )
    assert provider.status_code == 201, provider.text
    p = provider.json()
    assert p["api_key"] == "sk-…0001" and p["models"] == ["gpt-4o*", "o3"]
    assert "sk-admin-api-secret" not in api.get("/model-providers").text
    assert api.patch(f"/model-providers/{p['id']}", json={"rpm": 10}).json()["rpm"] == 10
    policy = api.post(
        "/routing-policies",
        json={
            "name": "api-policy",
            "providers": [{"provider_id": p["id"], "model": "gpt-4o-mini"}],
        },
    ).json()
    assert policy["entries"] == [{"provider_id": p["id"], "model": "gpt-4o-mini", "weight": 1}]
    assert policy["strategy"] == "ordered"
    changed = api.patch(
        f"/routing-policies/{policy['id']}",
        json={"strategy": "weighted", "providers": [{"provider_id": p["id"], "weight": 4}]},
    ).json()
    assert changed["strategy"] == "weighted" and changed["entries"][0]["weight"] == 4
    bad = api.patch(f"/routing-policies/{policy['id']}", json={"strategy": "fastest"})
    assert bad.status_code == 422 and "least-latency" in bad.json()["error"]["message"]
    bad = api.patch(
        f"/routing-policies/{policy['id']}",
        json={"providers": [{"provider_id": p["id"], "weight": -1}]},
    )
    assert bad.status_code == 422 and "weight" in bad.json()["error"]["message"]
    assert api.delete(f"/model-providers/{p['id']}").status_code == 409
    budget = api.post(
        "/budgets", json={"scope": "team", "limit_usd": "5.5", "window": "week"}
    ).json()
    assert (budget["scope"], budget["limit_usd"], budget["spend_usd"]) == (
        "team:team_default",
        "5.50",
        "0.00",
    )
    assert (
        api.patch(f"/budgets/{budget['id']}", json={"limit_usd": 7}).json()["limit_usd"] == "7.00"
    )
    assert api.post(f"/budgets/{budget['id']}/reset").json()["reset_at"]
    assert api.delete(f"/budgets/{budget['id']}").status_code == 200
    scopes = api.get("/scopes").json()
    assert [o["id"] for o in scopes["organizations"]] == ["org_default"]


def test_cli_remote_mode(cp: ControlPlaneProcess, tmp_path: Path) -> None:
    """With TOLLWAY_ADMIN_URL + TOLLWAY_ADMIN_TOKEN the CLI works on the remote store (nothing
    is written to the local data dir)."""
    local = tmp_path / "local"
    env = cli_env(local, TOLLWAY_ADMIN_URL=cp.url, TOLLWAY_ADMIN_TOKEN=TOKEN)
    group = click.Group("tollway")
    add_commands(group)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(group, list(args), env=env)
        assert result.exit_code == code, result.output
        return orjson.loads(result.stdout) if "--json" in args else result.output

    key = run("virtual-keys", "create", "--name", "remote", "--json")
    assert key["secret"].startswith("lw_vk_live_")
    assert key["id"] in [k["id"] for k in run("virtual-keys", "list", "--json")]
    assert run("virtual-keys", "update", key["id"], "--config-json", '{"tags": ["r"]}', "--json")[
        "config"
    ] == {"tags": ["r"]}
    out = run(
        "virtual-keys", "update", key["id"], "--config-json", '{"cache": {"mode": "x"}}', code=1
    )
    assert "cache.mode: must be one of respect, disable, force" in out
    assert "no virtual key 'vk_nope'" in run("virtual-keys", "get", "vk_nope", code=1)
    assert not local.exists()
    # The same through a real `tollway` process.
    proc = tollway(local, "virtual-keys", "revoke", key["id"], "--json", env=env)
    assert orjson.loads(proc.stdout)["status"] == "revoked"
    bad = {**env, "TOLLWAY_ADMIN_TOKEN": "wrong"}
    result = runner.invoke(group, ["virtual-keys", "list"], env=bad)
    assert result.exit_code == 1 and "Bearer" in result.output
    unreachable = {**env, "TOLLWAY_ADMIN_URL": "http://127.0.0.1:9"}
    result = runner.invoke(group, ["virtual-keys", "list"], env=unreachable)
    assert result.exit_code == 1 and "cannot reach the control plane" in result.output
