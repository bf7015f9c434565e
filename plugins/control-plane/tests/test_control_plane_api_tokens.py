"""Admin API tokens (issue 21): permissions at a scope, checked on every admin route.

Store level on SQLite and PostgreSQL; then a real ``tollway control-plane`` subprocess and its
admin API over HTTP (the bootstrap admin token sets up scopes and mints the tokens); the CLI
as a subprocess; hypothesis for the ``--permissions`` and scope text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from control_plane_helpers import (  # noqa: F401 (fixtures)
    PEPPER,
    ControlPlaneProcess,
    cli_env,
    pg_url,
    start_control_plane,
    stop,
    store_url,
    tollway,
    tollway_json,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway_control_plane.auth import (
    PERMISSIONS,
    Forbidden,
    authenticate,
    parse_permissions,
    principal_by_token_id,
    principal_for_token,
)
from tollway_control_plane.service import Service
from tollway_control_plane.store import NotFound, Store, ValidationError, parse_scope
from tollway_control_plane.traces import SpanRow, SpanStore

ADMIN = "admin-token-for-api-token-tests-0123"

# --- parsing --------------------------------------------------------------------------------


@settings(deadline=None)  # parsing is quick; a loaded CI machine is not
@given(st.lists(st.sampled_from(PERMISSIONS), min_size=1), st.sampled_from(["", " ", "  "]))
def test_permissions_text_parses_to_the_set_in_canonical_order(chosen: list[str], pad: str) -> None:
    text = ",".join(f"{pad}{p}{pad}" for p in chosen)
    assert parse_permissions(text) == tuple(p for p in PERMISSIONS if p in set(chosen))
    assert parse_permissions(chosen) == parse_permissions(text)


@settings(deadline=None)  # parsing is quick; a loaded CI machine is not
@given(
    st.text(min_size=1, max_size=40).filter(lambda t: t.strip() not in (*PERMISSIONS, "*", "all"))
)
def test_an_unknown_permission_is_refused_listing_the_valid_ones(word: str) -> None:
    if "," in word or not word.strip():
        return  # a list of parts, or nothing: covered elsewhere
    with pytest.raises(ValidationError) as info:
        parse_permissions(f"virtualKeys:read,{word}")
    assert "virtualKeys:create" in info.value.message and "unknown" in info.value.message


def test_no_permission_or_star() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        parse_permissions(" , ")
    assert parse_permissions("*") == PERMISSIONS


_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True)


@settings(deadline=None)  # parsing is quick; a loaded CI machine is not
@given(st.sampled_from(["organization", "team", "project", "org", "Team"]), _IDS)
def test_token_scope_text_parses(kind: str, ident: str) -> None:
    expected = {"org": "organization"}.get(kind.lower(), kind.lower())
    assert parse_scope(f"{kind}:{ident}") == (expected, ident)
    assert parse_scope(kind) == (expected, None)


# --- the store (SQLite and PostgreSQL) ------------------------------------------------------


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    with Store.open(store_url, PEPPER) as s:
        yield s


def test_store_creates_lists_resolves_and_revokes(store: Store) -> None:
    team = store.create_team("backend")
    project = store.create_project("api", team.id)
    token, secret = store.create_api_token(
        name="ci", scope=f"project:{project.id}", permissions="virtualKeys:create,requests:read"
    )
    assert secret.startswith("lw_at_") and token.display_prefix == secret[:12]
    assert token.scope.label == f"project:{project.id}" and token.team_id == team.id
    assert token.permissions == ["virtualKeys:create", "requests:read"]
    rows = store.db.query("SELECT * FROM api_tokens")
    assert secret not in orjson.dumps(rows).decode()  # only the hash is stored
    assert all("secret" not in t.to_json() for t in store.list_api_tokens())

    resolved = store.resolve_api_token(secret)
    assert resolved is not None and resolved.id == token.id
    assert store.get_api_token(token.id).last_used_at is not None
    principal = authenticate(None, secret, store=store)
    assert principal is not None and principal.project_id == project.id
    assert principal.can("virtualKeys:create") and not principal.can("virtualKeys:delete")
    assert store.resolve_api_token(secret + "x") is None
    assert store.resolve_api_token("lw_at_nothing") is None

    assert store.revoke_api_token(token.id).status() == "revoked"
    assert store.resolve_api_token(secret) is None
    assert authenticate("admin", secret, store=store) is None
    assert store.revoke_api_token(token.id).revoked_at is not None  # twice: a no-op


def test_store_expired_token_does_not_resolve(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    _, secret = store.create_api_token(name="old", scope="organization", permissions="*")
    assert store.resolve_api_token(secret) is not None
    later = datetime.now(UTC) + timedelta(days=2)
    _, soon_secret = store.create_api_token(
        name="soon",
        scope="organization",
        permissions="budgets:read",
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    assert store.resolve_api_token(soon_secret, at=later) is None
    expired, expired_secret = store.create_api_token(
        name="gone", scope="organization", permissions="budgets:read", expires_at=past
    )
    assert expired.status() == "expired" and store.resolve_api_token(expired_secret) is None


def test_store_finds_an_active_token_by_id_for_a_console_session(store: Store) -> None:
    """What a console session (which keeps only the id) asks on each request."""
    project = store.create_project("console")
    token, _ = store.create_api_token(
        name="console", scope=f"project:{project.id}", permissions="virtualKeys:read"
    )
    found = principal_by_token_id(store, token.id)
    assert found is not None and found.token_id == token.id
    assert found.project_id == project.id and found.permissions == {"virtualKeys:read"}
    assert principal_by_token_id(store, "at_nope") is None
    store.revoke_api_token(token.id)  # this process forgets it at once
    assert principal_by_token_id(store, token.id) is None
    soon, _ = store.create_api_token(
        name="soon",
        scope="organization",
        permissions="*",
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    assert store.active_api_token(soon.id) is not None
    # Cached or not, an expiry is checked against the time asked about.
    assert store.active_api_token(soon.id, at=datetime.now(UTC) + timedelta(days=2)) is None


def test_store_refuses_bad_input(store: Store) -> None:
    with pytest.raises(ValidationError, match="valid: virtualKeys:read"):
        store.create_api_token(name="x", scope="organization", permissions="keys:all")
    with pytest.raises(ValidationError, match="no project"):
        store.create_api_token(name="x", scope="project:nope", permissions="*")
    with pytest.raises(ValidationError, match="not a scope"):
        store.create_api_token(name="x", scope="galaxy", permissions="*")


# --- the admin API over HTTP ----------------------------------------------------------------


class Setup:
    def __init__(self, cp: ControlPlaneProcess) -> None:
        self.cp = cp
        self.ids: dict[str, str] = {}

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.cp.url}/api/admin",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    def mint(self, scope: str, permissions: str, name: str = "t") -> str:
        with self.client(ADMIN) as admin:
            r = admin.post(
                "/api-tokens", json={"name": name, "scope": scope, "permissions": permissions}
            )
        assert r.status_code == 201, r.text
        secret: str = r.json()["secret"]
        return secret


def _span(request_id: str, org: str, project: str) -> SpanRow:
    start = time.time_ns()
    return SpanRow(
        request_id=request_id,
        trace_id=request_id[-32:].rjust(32, "0"),
        span_id=request_id[-16:].rjust(16, "0"),
        parent_span_id=None,
        name="chat",
        start_ns=start,
        end_ns=start + 1_000_000,
        attributes={
            "langwatch.gateway_request_id": request_id,
            "langwatch.organization_id": org,
            "langwatch.project_id": project,
            "gen_ai.request.model": "gpt-4o-mini",
        },
        events=[],
        resource={},
        status_error=False,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir = tmp_path_factory.mktemp("api-tokens") / "data"
    cp = start_control_plane(data_dir, env=cli_env(data_dir, TOLLWAY_ADMIN_TOKEN=ADMIN))
    s = Setup(cp)
    try:
        with s.client(ADMIN) as admin:
            team = admin.post("/scopes", json={"type": "team", "name": "growth"}).json()
            p1 = admin.post(
                "/scopes", json={"type": "project", "name": "p1", "parent_id": team["id"]}
            ).json()
            p2 = admin.post("/scopes", json={"type": "project", "name": "p2"}).json()
            s.ids.update(team=team["id"], p1=p1["id"], p2=p2["id"])
            other = admin.post(
                "/virtual-keys", json={"name": "p2 key", "scope": f"project:{p2['id']}"}
            )
            s.ids["p2_key"] = other.json()["id"]
            budget = admin.post("/budgets", json={"scope": f"project:{p2['id']}", "limit_usd": "5"})
            s.ids["p2_budget"] = budget.json()["id"]
        with Store.open(data_dir / "tollway.db", PEPPER) as store:
            SpanStore(store.db).insert(
                [
                    _span("grq_" + "1" * 26, "org_default", s.ids["p1"]),
                    _span("grq_" + "2" * 26, "org_default", s.ids["p2"]),
                ]
            )
        yield s
    finally:
        stop(cp.proc)


def test_migration_guide_token_creates_a_provider_and_a_key(setup: Setup) -> None:
    secret = setup.mint("organization", "modelProviders:update,virtualKeys:create", "migration")
    with setup.client(secret) as api:
        provider = api.post(
            "/model-providers",
            json={"type": "openai", "name": "openai-main", "api_key": "sk-test-0123456789"},
        )
        assert provider.status_code == 201, provider.text
        key = api.post("/virtual-keys", json={"name": "from guide"})
        assert key.status_code == 201, key.text
        assert key.json()["scope"] == "organization:org_default" and key.json()["secret"]
        refused = api.delete(f"/virtual-keys/{key.json()['id']}")
        assert refused.status_code == 403
        err = refused.json()["error"]
        assert err["type"] == "forbidden" and "virtualKeys:delete" in err["message"]


def test_project_token_works_in_its_project_only(setup: Setup) -> None:
    p1, p2 = setup.ids["p1"], setup.ids["p2"]
    secret = setup.mint(
        f"project:{p1}", "virtualKeys:create,virtualKeys:read,budgets:read,requests:read"
    )
    with setup.client(secret) as api:
        mine = api.post("/virtual-keys", json={"name": "mine"})  # no scope: its project
        assert mine.status_code == 201 and mine.json()["project_id"] == p1
        explicit = api.post("/virtual-keys", json={"name": "mine 2", "scope": f"project:{p1}"})
        assert explicit.status_code == 201
        for scope in (f"project:{p2}", "organization", f"team:{setup.ids['team']}"):
            elsewhere = api.post("/virtual-keys", json={"name": "x", "scope": scope})
            assert elsewhere.status_code == 403, scope
            assert f"project:{p1}" in elsewhere.json()["error"]["message"]
        # Another project's records read as missing, like ids that do not exist.
        for path in (f"/virtual-keys/{setup.ids['p2_key']}", f"/budgets/{setup.ids['p2_budget']}"):
            hidden = api.get(path)
            assert hidden.status_code == 404 and hidden.json()["error"]["type"] == "not_found"
            real = path.rsplit("/", 1)[1]
            missing = api.get(path.replace(real, "xx_nope"))
            assert missing.status_code == 404
            shown = hidden.json()["error"]["message"].replace(real, "ID")
            assert shown == missing.json()["error"]["message"].replace("xx_nope", "ID")
        listed = {k["id"] for k in api.get("/virtual-keys").json()}
        assert mine.json()["id"] in listed and setup.ids["p2_key"] not in listed
        assert all(b["scope"] != f"project:{p2}" for b in api.get("/budgets").json())
        scopes = api.get("/scopes")
        assert scopes.status_code == 403  # no scopes:read
        requests = api.get("/requests").json()["data"]
        assert [r["project_id"] for r in requests] == [p1]
        assert api.get("/requests", params={"project": p2}).json()["data"] == []
        assert api.get("/requests/grq_" + "2" * 26).status_code == 404
        assert api.get("/requests/grq_" + "1" * 26).status_code == 200


def test_read_only_token_cannot_write_and_never_sees_secrets(setup: Setup) -> None:
    secret = setup.mint("organization", "virtualKeys:read")
    with setup.client(secret) as api:
        keys = api.get("/virtual-keys")
        assert keys.status_code == 200 and keys.json()
        assert all("secret" not in k for k in keys.json())
        key_id = setup.ids["p2_key"]
        writes = [
            ("POST", "/virtual-keys", {"name": "x"}),
            ("PATCH", f"/virtual-keys/{key_id}", {"name": "y"}),
            ("DELETE", f"/virtual-keys/{key_id}", None),
            ("POST", f"/virtual-keys/{key_id}/rotate", None),
            ("POST", f"/virtual-keys/{key_id}/revoke", None),
            ("POST", f"/virtual-keys/{key_id}/disable", None),
            ("POST", "/model-providers", {"type": "openai", "name": "x"}),
            ("POST", "/budgets", {"scope": "organization", "limit_usd": "1"}),
            ("POST", "/routing-policies", {"name": "x", "providers": "mp_x"}),
            ("POST", "/scopes", {"type": "team", "name": "x"}),
            ("POST", "/api-tokens", {"scope": "organization", "permissions": "virtualKeys:read"}),
        ]
        for method, path, body in writes:
            r = api.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["type"] == "forbidden"


def test_token_management_no_escalation_and_revocation(setup: Setup) -> None:
    p1 = setup.ids["p1"]
    manager = setup.mint(f"team:{setup.ids['team']}", "apiTokens:manage,virtualKeys:read")
    with setup.client(manager) as api:
        broader = api.post(
            "/api-tokens", json={"scope": "organization", "permissions": "virtualKeys:read"}
        )
        assert broader.status_code == 403 and "team:" in broader.json()["error"]["message"]
        more = api.post(
            "/api-tokens", json={"scope": f"project:{p1}", "permissions": "virtualKeys:delete"}
        )
        assert more.status_code == 403 and "virtualKeys:delete" in more.json()["error"]["message"]
        minted = api.post(
            "/api-tokens", json={"scope": f"project:{p1}", "permissions": ["virtualKeys:read"]}
        )
        assert minted.status_code == 201, minted.text
        child, child_secret = minted.json()["id"], minted.json()["secret"]
        listed = api.get("/api-tokens").json()
        assert child in {t["id"] for t in listed} and all("secret" not in t for t in listed)
        got = api.get(f"/api-tokens/{child}").json()
        assert "secret" not in got and got["permissions"] == ["virtualKeys:read"]
        bad = api.post("/api-tokens", json={"scope": f"project:{p1}", "permissions": "keys:*"})
        assert bad.status_code == 422 and "valid:" in bad.json()["error"]["message"]
        with setup.client(child_secret) as child_api:
            assert child_api.get("/virtual-keys").status_code == 200
            assert api.post(f"/api-tokens/{child}/revoke").json()["status"] == "revoked"
            gone = child_api.get("/virtual-keys")
            assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]


def test_openapi_lists_each_routes_permission(setup: Setup) -> None:
    doc = httpx.get(f"{setup.cp.url}/api/admin/openapi.json").json()
    ops = {e["operationId"]: e for item in doc["paths"].values() for e in item.values()}
    assert ops["keys_create"]["x-permission"] == "virtualKeys:create"
    assert "virtualKeys:create" in ops["keys_create"]["description"]
    assert ops["api_tokens_create"]["x-permission"] == "apiTokens:manage"
    assert ops["requests_list"]["x-permission"] == "requests:read"


# --- the CLI --------------------------------------------------------------------------------


def test_cli_create_list_get_revoke_on_the_local_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = tollway_json(
        data_dir,
        "api-tokens",
        "create",
        "--scope",
        "organization",
        "--permissions",
        "modelProviders:update, virtualKeys:create",
        "--name",
        "migration",
    )
    assert created["secret"].startswith("lw_at_")
    assert created["permissions"] == ["virtualKeys:create", "modelProviders:update"]
    listed = tollway_json(data_dir, "api-tokens", "list")
    assert [t["id"] for t in listed] == [created["id"]] and "secret" not in listed[0]
    human = tollway(data_dir, "api-tokens", "list").stdout
    assert created["display_prefix"] in human and created["secret"] not in human
    assert tollway_json(data_dir, "api-tokens", "get", created["id"])["status"] == "active"
    assert "revoked" in tollway(data_dir, "api-tokens", "revoke", created["id"]).stdout
    bad = tollway(
        data_dir,
        "api-tokens",
        "create",
        "--scope",
        "organization",
        "--permissions",
        "keys:everything",
        check=False,
    )
    assert bad.returncode == 2 and "virtualKeys:read" in bad.stderr
    with Store.open(data_dir / "tollway.db", PEPPER) as store:
        assert store.resolve_api_token(created["secret"]) is None


def test_api_token_works_without_the_admin_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created: dict[str, Any] = tollway_json(
        data_dir, "api-tokens", "create", "--scope", "organization", "--permissions", "*"
    )
    cp = start_control_plane(data_dir)  # no TOLLWAY_ADMIN_TOKEN
    try:
        headers = {"Authorization": f"Bearer {created['secret']}"}
        r = httpx.get(f"{cp.url}/api/admin/virtual-keys", headers=headers, timeout=10)
        assert r.status_code == 200
        r = httpx.get(f"{cp.url}/api/admin/virtual-keys", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401 and "api-tokens create" in r.json()["error"]["message"]
        # The CLI's remote mode with the API token.
        env = cli_env(
            tmp_path / "elsewhere",
            TOLLWAY_ADMIN_URL=cp.url,
            TOLLWAY_ADMIN_TOKEN=created["secret"],
        )
        listed = tollway_json(tmp_path / "elsewhere", "api-tokens", "list", env=env)
        assert [t["id"] for t in listed] == [created["id"]]
    finally:
        stop(cp.proc)


def test_team_token_reads_what_is_above_but_cannot_change_it(setup: Setup) -> None:
    team, p2 = setup.ids["team"], setup.ids["p2"]
    with setup.client(ADMIN) as admin:
        org_provider = admin.post(
            "/model-providers", json={"type": "openai", "name": "org-wide", "api_key": "sk-x" * 4}
        ).json()
    secret = setup.mint(f"team:{team}", "modelProviders:read,modelProviders:update,scopes:read")
    with setup.client(secret) as api:
        assert api.get(f"/model-providers/{org_provider['id']}").status_code == 200
        assert org_provider["id"] in {p["id"] for p in api.get("/model-providers").json()}
        changed = api.patch(f"/model-providers/{org_provider['id']}", json={"priority": 3})
        assert changed.status_code == 403 and "organization:" in changed.json()["error"]["message"]
        assert api.delete(f"/model-providers/{org_provider['id']}").status_code == 403
        own = api.post("/model-providers", json={"type": "openai", "name": "team-own"})
        assert own.status_code == 201 and own.json()["scope"] == f"team:{team}"
        assert api.patch(f"/model-providers/{own.json()['id']}", json={"priority": 2}).is_success
        scopes = api.get("/scopes").json()
        assert [t["id"] for t in scopes["teams"]] == [team]
        assert setup.ids["p1"] in {p["id"] for p in scopes["projects"]}
        assert p2 not in {p["id"] for p in scopes["projects"]}
        assert [o["id"] for o in scopes["organizations"]] == ["org_default"]
        org_only = api.post("/scopes", json={"type": "organization", "name": "mine"})
        assert org_only.status_code == 403


def test_service_applies_the_same_checks_without_http(store: Store) -> None:
    """What the console does: Service.call with the principal, on SQLite and PostgreSQL."""
    service = Service(store)
    mine = store.create_project("mine")
    other = store.create_project("other")
    token, _ = store.create_api_token(
        name="p", scope=f"project:{mine.id}", permissions="virtualKeys:create,virtualKeys:read"
    )
    principal = principal_for_token(token)
    key = service.call("keys.create", body={"name": "k"}, principal=principal)
    assert key["project_id"] == mine.id
    with pytest.raises(Forbidden, match=f"project:{mine.id}"):
        service.call(
            "keys.create", body={"name": "k", "scope": f"project:{other.id}"}, principal=principal
        )
    theirs = service.call("keys.create", body={"name": "t", "scope": f"project:{other.id}"})
    with pytest.raises(NotFound):
        service.call("keys.get", theirs["id"], principal=principal)
    assert [k["id"] for k in service.call("keys.list", principal=principal)] == [key["id"]]
