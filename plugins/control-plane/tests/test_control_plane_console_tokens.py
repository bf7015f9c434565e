"""The console signed in with real API tokens (issue 21): minted as an operator does (the CLI on
the store, or the admin API with the admin token), against ``tollway control-plane`` as a
subprocess, over plain HTTP.

A project-scoped token creates keys in its project and nowhere else; a team token sees its
team's projects' requests, as ``/api/admin/requests`` does; a read-only token sees no write
button and a forged POST (with a valid CSRF token) is 403; revoking a token ends its session.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from control_plane_helpers import (
    PEPPER,
    ControlPlaneProcess,
    cli_env,
    start_control_plane,
    stop,
    tollway,
    tollway_json,
)

from tollway_control_plane.store import Store
from tollway_control_plane.traces import SpanRow, SpanStore

ADMIN = "console-tokens-admin-token-0123456789"
CREATE_READ = "virtualKeys:create,virtualKeys:read,requests:read"


class Setup:
    def __init__(self, cp: ControlPlaneProcess) -> None:
        self.cp = cp
        self.ids: dict[str, str] = {}

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.cp.url}/api/admin",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )

    def mint_cli(self, scope: str, permissions: str, name: str) -> dict[str, Any]:
        """``tollway api-tokens create`` on the control plane's store, as an operator runs it."""
        created: dict[str, Any] = tollway_json(
            self.cp.data_dir, "api-tokens", "create", "--scope", scope,
            "--permissions", permissions, "--name", name,
        )  # fmt: skip
        return created

    def mint_api(self, scope: str, permissions: str, name: str) -> dict[str, Any]:
        with self.admin() as api:
            r = api.post(
                "/api-tokens", json={"name": name, "scope": scope, "permissions": permissions}
            )
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    def virtual_keys(self) -> list[dict[str, Any]]:
        with self.admin() as api:
            found: list[dict[str, Any]] = api.get("/virtual-keys").json()
        return found

    def sign_in(self, secret: str) -> httpx.Client:
        client = httpx.Client(base_url=self.cp.url, headers={"origin": self.cp.url}, timeout=10)
        r = client.post("/console/login", data={"token": secret})
        assert r.status_code == 303, r.text
        return client


def _span(request_id: str, n: int, project: str, model: str) -> SpanRow:
    start = time.time_ns() - 5_000_000
    return SpanRow(
        request_id=request_id,
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        parent_span_id=None,
        name=f"chat {model}",
        start_ns=start,
        end_ns=start + 1_000_000,
        attributes={
            "langwatch.gateway_request_id": request_id,
            "langwatch.organization_id": "org_default",
            "langwatch.project_id": project,
            "gen_ai.request.model": model,
            "http.response.status_code": 200,
        },
        events=[],
        resource={},
        status_error=False,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Team ``growth`` with projects ``p1`` and ``p2``; ``p3`` in the default team; a key in
    each of p1 and p2; one stored request per project."""
    data_dir = tmp_path_factory.mktemp("console-tokens") / "data"
    cp = start_control_plane(data_dir, env=cli_env(data_dir, TOLLWAY_ADMIN_TOKEN=ADMIN))
    s = Setup(cp)
    try:
        with s.admin() as api:
            team = api.post("/scopes", json={"type": "team", "name": "growth"}).json()
            for name, parent in (("p1", team["id"]), ("p2", team["id"]), ("p3", None)):
                body = {"type": "project", "name": name, "parent_id": parent}
                s.ids[name] = api.post("/scopes", json=body).json()["id"]
            for name in ("p1", "p2"):
                r = api.post(
                    "/virtual-keys",
                    json={"name": f"key-of-{name}", "scope": f"project:{s.ids[name]}"},
                )
                assert r.status_code == 201, r.text
                s.ids[f"{name}_key"] = r.json()["id"]
        with Store.open(data_dir / "tollway.db", PEPPER) as store:
            SpanStore(store.db).insert(
                [
                    _span(f"grq_{name}", n + 1, s.ids[name], f"model-of-{name}")
                    for n, name in enumerate(("p1", "p2", "p3"))
                ]
            )
        yield s
    finally:
        stop(cp.proc)


def _csrf(client: httpx.Client, path: str = "/console/keys") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def test_project_token_creates_keys_in_its_project_and_nowhere_else(setup: Setup) -> None:
    p1, p2 = setup.ids["p1"], setup.ids["p2"]
    token = setup.mint_cli(f"project:{p1}", CREATE_READ, "console p1")
    client = setup.sign_in(token["secret"])

    listing = client.get("/console/keys")
    assert "key-of-p1" in listing.text and "key-of-p2" not in listing.text
    assert 'id="create-key"' in listing.text  # it may create keys
    assert f"project:{p1} when empty" in listing.text  # … and where they land by default
    assert client.get(f"/console/keys/{setup.ids['p1_key']}").status_code == 200
    other = client.get(f"/console/keys/{setup.ids['p2_key']}")
    assert other.status_code == 404 and "key-of-p2" not in other.text

    csrf = _csrf(client)
    made = client.post("/console/keys", data={"name": "made-in-p1", "csrf": csrf})
    assert made.status_code == 200 and "made-in-p1" in made.text, made.text
    assert re.search(r"lw_vk_\w+", made.text)  # the secret, shown once
    (created,) = [k for k in setup.virtual_keys() if k["name"] == "made-in-p1"]
    assert created["project_id"] == p1

    before = len(setup.virtual_keys())
    forged = client.post(
        "/console/keys", data={"name": "forged-in-p2", "scope": f"project:{p2}", "csrf": csrf}
    )
    assert forged.status_code == 403, forged.text
    assert f"scoped to project:{p1}" in forged.text
    assert len(setup.virtual_keys()) == before
    assert not [k for k in setup.virtual_keys() if k["name"] == "forged-in-p2"]
    # Writing to the other project's key by id: it does not exist as far as this token knows.
    r = client.post(f"/console/keys/{setup.ids['p2_key']}/revoke", data={"csrf": csrf})
    assert r.status_code in (403, 404), r.text
    assert [k["status"] for k in setup.virtual_keys() if k["id"] == setup.ids["p2_key"]] == [
        "active"
    ]

    # Requests: its project's only, in the explorer, the request page, search and overview.
    listed = client.get("/console/requests").text
    assert "grq_p1" in listed and "grq_p2" not in listed and "grq_p3" not in listed
    assert client.get("/console/requests/grq_p1").status_code == 200
    assert client.get("/console/requests/grq_p2").status_code == 404
    assert client.get("/console/requests", params={"q": "grq_p2"}).status_code == 404
    assert client.get("/console/requests", params={"q": f"{2:032x}"}).status_code == 404
    assert client.get("/console/requests", params={"q": f"{1:032x}"}).status_code == 303
    overview = client.get("/console/").text
    assert "model-of-p1" in overview and "model-of-p2" not in overview


def test_team_token_sees_its_teams_projects_like_the_admin_api(setup: Setup) -> None:
    token = setup.mint_api(
        f"team:{_team_of(setup)}", "requests:read,virtualKeys:read", "console growth"
    )
    client = setup.sign_in(token["secret"])
    listed = client.get("/console/requests").text
    assert "grq_p1" in listed and "grq_p2" in listed and "grq_p3" not in listed
    overview = client.get("/console/").text
    assert "model-of-p1" in overview and "model-of-p2" in overview
    assert "model-of-p3" not in overview
    assert client.get("/console/requests/grq_p3").status_code == 404
    # The same as the admin API says for the same token.
    with httpx.Client(
        base_url=f"{setup.cp.url}/api/admin",
        headers={"Authorization": f"Bearer {token['secret']}"},
        timeout=10,
    ) as api:
        seen = {r["request_id"] for r in api.get("/requests").json()["data"]}
    assert seen == {"grq_p1", "grq_p2"}


def _team_of(setup: Setup) -> str:
    with setup.admin() as api:
        project = api.get("/scopes").json()["projects"]
    return str(next(p["team_id"] for p in project if p["id"] == setup.ids["p1"]))


def test_read_only_token_sees_no_write_buttons_and_a_forged_post_is_refused(
    setup: Setup,
) -> None:
    reads = "virtualKeys:read,modelProviders:read,routingPolicies:read,budgets:read,requests:read"
    token = setup.mint_cli("organization", reads, "console read-only")
    client = setup.sign_in(token["secret"])
    key_id = setup.ids["p1_key"]
    listing = client.get("/console/keys").text
    assert "key-of-p1" in listing and "key-of-p2" in listing
    assert 'id="create-key"' not in listing and "Create key" not in listing
    page = client.get(f"/console/keys/{key_id}").text
    for button in ("Rotate secret", "Revoke", "Disable", "Save config"):
        assert button not in page, button
    csrf = _csrf(client, f"/console/keys/{key_id}")  # the sign-out form carries one
    before = len(setup.virtual_keys())
    for path, data in (
        ("/console/keys", {"name": "forged"}),
        (f"/console/keys/{key_id}/revoke", {}),
        (f"/console/keys/{key_id}/rotate", {}),
        (f"/console/keys/{key_id}/config", {"config": "{}"}),
    ):
        r = client.post(path, data={**data, "csrf": csrf})
        assert r.status_code == 403, path
        assert "lacks the virtualKeys:" in r.text, r.text
    assert len(setup.virtual_keys()) == before
    assert [k["status"] for k in setup.virtual_keys() if k["id"] == key_id] == ["active"]


def test_a_token_without_requests_read_is_refused_the_explorer(setup: Setup) -> None:
    token = setup.mint_api("organization", "virtualKeys:read", "keys only")
    client = httpx.Client(base_url=setup.cp.url, headers={"origin": setup.cp.url}, timeout=10)
    r = client.post("/console/login", data={"token": token["secret"]})
    assert r.status_code == 303 and r.headers["location"] == "/console/keys"  # not the overview
    nav = client.get("/console/keys").text.split("</nav>")[0]
    assert "Virtual keys" in nav
    for hidden in ("Overview", "Requests", "Providers", "Budgets"):
        assert f">{hidden}<" not in nav, hidden
    for path in ("/console/requests", "/console/requests/grq_p1", "/console/"):
        r = client.get(path)
        assert r.status_code == 403, path
        assert "requests:read" in r.text
    assert client.get("/console/keys").status_code == 200


def test_revoking_the_token_ends_the_session(setup: Setup, tmp_path: Path) -> None:
    token = setup.mint_cli(f"project:{setup.ids['p1']}", CREATE_READ, "console revoked")
    client = setup.sign_in(token["secret"])
    csrf = _csrf(client)
    # Revoked as an operator does, with the CLI on the store: the control plane's cached look-up
    # lasts about a second, so its next request after that ends the session.
    out = tollway(setup.cp.data_dir, "api-tokens", "revoke", token["id"])
    assert "revoked" in out.stdout
    deadline = time.monotonic() + 15
    while True:
        r = client.get("/console/keys")
        if r.status_code == 303:
            break
        assert r.status_code == 200, r.text
        assert time.monotonic() < deadline, "the revoked token's session goes on"
        time.sleep(0.2)
    assert r.headers["location"].startswith("/console/login?ended=token"), r.headers
    assert "has been revoked or has expired" in client.get(r.headers["location"]).text
    # The session is gone for good: a POST with its CSRF token creates nothing.
    before = len(setup.virtual_keys())
    r = client.post("/console/keys", data={"name": "after-revoke", "csrf": csrf})
    assert r.status_code == 303 and "/console/login" in r.headers["location"]
    assert len(setup.virtual_keys()) == before
    # A token revoked through the admin API ends its session at the very next request.
    second = setup.mint_api(f"project:{setup.ids['p1']}", CREATE_READ, "console revoked 2")
    other = setup.sign_in(second["secret"])
    assert other.get("/console/keys").status_code == 200
    with setup.admin() as api:
        assert api.post(f"/api-tokens/{second['id']}/revoke").status_code == 200
    assert other.get("/console/keys").status_code == 303
