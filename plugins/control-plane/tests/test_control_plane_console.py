"""The console's guard rails over plain HTTP (the browser walkthrough is in
test_control_plane_console_browser.py): sign-in, the session cookie, CSRF and cross-site posts,
escaping, secrets shown once, the sign-in throttle. Against ``tollway control-plane`` as a
subprocess (the throttle in-process). Signed in with real API tokens (read-only, project- and
team-scoped, revoked): test_control_plane_console_tokens.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from control_plane_helpers import SECRETS_ENV, cli_env, start_control_plane, stop

ADMIN_TOKEN = "console-http-admin-token-0123456789"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data_dir = tmp_path_factory.mktemp("console-http")
    proc = start_control_plane(data_dir, env=cli_env(data_dir, TOLLWAY_ADMIN_TOKEN=ADMIN_TOKEN))
    try:
        yield proc
    finally:
        stop(proc.proc)


def _client(cp: Any, origin: str | None = "self") -> httpx.Client:
    headers = {"origin": cp.url} if origin == "self" else ({"origin": origin} if origin else {})
    return httpx.Client(base_url=cp.url, headers=headers, timeout=10)


def _signed_in(cp: Any) -> httpx.Client:
    client = _client(cp)
    r = client.post("/console/login", data={"token": ADMIN_TOKEN})
    assert r.status_code == 303, r.text
    return client


def _csrf(client: httpx.Client, path: str = "/console/keys") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def test_start_prints_the_console_url(cp: Any) -> None:
    assert f"console: {cp.url}/console/ (sign in with TOLLWAY_ADMIN_TOKEN)" in cp.logs()


def test_unauthenticated_pages_redirect_to_sign_in(cp: Any) -> None:
    client = _client(cp)
    for path in ("/console/", "/console/keys", "/console/requests?key=vk_1", "/console/budgets"):
        r = client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/console/login?next=/console/"), r.headers
    # A forged session cookie is no session.
    forged = _client(cp)
    forged.cookies.set("tollway_console", "made-up", path="/console")
    assert forged.get("/console/keys").status_code == 303
    # The sign-in page and the assets need no session; nothing comes from elsewhere.
    login = client.get("/console/login")
    assert login.status_code == 200 and 'name="token"' in login.text
    assert "http://" not in login.text and "https://" not in login.text
    assert "default-src 'self'" in login.headers["content-security-policy"]
    assert client.get("/console/static/console.css").status_code == 200
    assert client.get("/console/static/console.js").status_code == 200


def test_sign_in_sets_a_strict_cookie_and_refuses_bad_tokens(cp: Any) -> None:
    client = _client(cp)
    bad = client.post("/console/login", data={"token": "not-the-token"})
    assert bad.status_code == 401 and "was not accepted" in bad.text
    assert "set-cookie" not in bad.headers
    r = client.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console/budgets"})
    assert r.status_code == 303 and r.headers["location"] == "/console/budgets"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; https sets it
    assert ADMIN_TOKEN not in cookie
    # next= never leaves the console.
    for target in (
        "https://evil.example/",
        "//evil.example/console",
        "/api/admin/store",
        "/consolex",
        "/console/../api/admin/store",
        "/console\\..\\api",
    ):
        r = _client(cp).post("/console/login", data={"token": ADMIN_TOKEN, "next": target})
        assert r.headers["location"] == "/console/", target
    # A sign-in posted from another site is refused.
    r = _client(cp, "https://evil.example").post("/console/login", data={"token": ADMIN_TOKEN})
    assert r.status_code == 403


def test_posts_need_the_csrf_token_and_this_origin(cp: Any) -> None:
    client = _signed_in(cp)
    csrf = _csrf(client)
    before = client.get("/console/keys").text.count("<tr>")
    cases = {
        "no csrf": (client, {"name": "x"}),
        "wrong csrf": (client, {"name": "x", "csrf": "A" * 43}),
    }
    cross = _client(cp, "https://evil.example")
    no_origin = _client(cp, None)
    for other in (cross, no_origin):
        other.cookies.update(client.cookies)
    cases["cross-site"] = (cross, {"name": "x", "csrf": csrf})
    cases["no origin or referer"] = (no_origin, {"name": "x", "csrf": csrf})
    for label, (c, data) in cases.items():
        r = c.post("/console/keys", data=data)
        assert r.status_code == 403, label
        assert "refused" in r.text, label
    assert client.get("/console/keys").text.count("<tr>") == before  # nothing was created
    # With both: created.
    r = client.post("/console/keys", data={"name": "csrf-ok", "csrf": csrf, "env": "live"})
    assert r.status_code == 200 and "csrf-ok" in r.text


def test_names_are_escaped_and_secrets_shown_once(cp: Any) -> None:
    client = _signed_in(cp)
    csrf = _csrf(client)
    name = "<script>alert(1)</script>"
    r = client.post("/console/keys", data={"name": name, "csrf": csrf})
    assert r.status_code == 200
    assert name not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    secret = re.search(r'<code class="secret">(lw_vk_live_\w+)</code>', r.text)
    assert secret, r.text
    key_id = re.search(r'href="/console/keys/(vk_\w+)"', r.text)
    assert key_id
    for path in ("/console/keys", f"/console/keys/{key_id.group(1)}", "/console/"):
        page = client.get(path)
        assert page.status_code == 200
        assert secret.group(1) not in page.text, path
        assert name not in page.text, path
    assert r.headers["cache-control"] == "no-store"
    # Search matches names; the search text is escaped too.
    listed = client.get("/console/keys", params={"q": "<script>"})
    assert "&lt;script&gt;alert(1)" in listed.text and "<script>alert" not in listed.text


def test_config_errors_are_the_services(cp: Any) -> None:
    client = _signed_in(cp)
    csrf = _csrf(client)
    r = client.post(
        "/console/keys", data={"name": "cfg", "csrf": csrf, "config": '{"models_allowed": 3}'}
    )
    assert r.status_code == 422
    # The same words the CLI prints for the same body.
    assert "models_allowed: must be an array of strings or null, not an integer" in r.text
    r = client.post("/console/keys", data={"name": "cfg", "csrf": csrf, "config": "{nope"})
    assert r.status_code == 422 and "config: not valid JSON" in r.text


def test_unknown_things_are_404_pages(cp: Any) -> None:
    client = _signed_in(cp)
    r = client.get("/console/keys/vk_nope")
    assert r.status_code == 404 and "no virtual key" in r.text
    r = client.get("/console/requests/grq_nope")
    assert r.status_code == 404 and "no request &#39;grq_nope&#39;" in r.text
    r = client.get("/console/requests", params={"q": "what"})
    assert r.status_code == 404 and "grq_" in r.text
    r = client.get("/console/requests", params={"since": "yesterday-ish"})
    assert r.status_code == 422 and "since:" in r.text


# --- in-process: the throttle (it would lock other tests out of 127.0.0.1), the https cookie --
# Real API tokens (read-only, project- and team-scoped, revoked): test_control_plane_console_tokens.


def _app(tmp_path: Path) -> tuple[Any, Any]:
    from tollway_control_plane.runtime import ControlPlane
    from tollway_control_plane.server import create_app

    env = {**SECRETS_ENV, "TOLLWAY_ADMIN_TOKEN": ADMIN_TOKEN}
    control = ControlPlane.open(tmp_path / "data", env, environment="local")
    return create_app(control), control


def test_repeated_failed_sign_ins_are_throttled(tmp_path: Path) -> None:
    from tollway_control_plane.console.sessions import LoginThrottle

    app, control = _app(tmp_path)

    async def run() -> None:
        client = app.test_client()
        headers = {"origin": "http://localhost"}
        for _ in range(LoginThrottle.MAX_FAILURES):
            r = await client.post("/console/login", form={"token": "guess"}, headers=headers)
            assert r.status_code == 401
        r = await client.post("/console/login", form={"token": ADMIN_TOKEN}, headers=headers)
        assert r.status_code == 429  # even the right token, until the window passes
        assert "Too many failed sign-ins" in await r.get_data(as_text=True)

    try:
        asyncio.run(run())
    finally:
        control.close()


def test_providers_and_routing_order_through_the_console(cp: Any) -> None:
    client = _signed_in(cp)
    csrf = _csrf(client, "/console/providers")
    upstream_secret = "sk-console-upstream-secret-0123456789"
    ids = []
    for name in ("first", "second"):
        r = client.post(
            "/console/providers",
            data={
                "csrf": csrf,
                "name": name,
                "type": "openai",
                "base_url": "https://api.openai.com/v1",
                "api_key": upstream_secret,
                "models": "gpt-4o-mini, gpt-4o",
            },
        )
        assert r.status_code == 303, r.text
    admin = httpx.Client(
        base_url=f"{cp.url}/api/admin",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    stored = {p["name"]: p for p in admin.get("/model-providers").json()}
    ids = [stored["first"]["id"], stored["second"]["id"]]
    assert stored["first"]["models"] == ["gpt-4o-mini", "gpt-4o"]
    page = client.get("/console/providers").text
    assert upstream_secret not in page and "first" in page and "second" in page
    # A refused create keeps what was typed, except the credential.
    r = client.post(
        "/console/providers",
        data={"csrf": csrf, "name": "bad", "type": "nope", "api_key": upstream_secret},
    )
    assert r.status_code == 422 and "type:" in r.text and upstream_secret not in r.text

    policy = admin.post("/routing-policies", json={"name": "ordered", "providers": ids}).json()
    r = client.post(
        f"/console/policies/{policy['id']}/move",
        data={"csrf": csrf, "index": "0", "direction": "down"},
    )
    assert r.status_code == 303
    moved = admin.get(f"/routing-policies/{policy['id']}").json()
    assert [e["provider_id"] for e in moved["entries"]] == ids[::-1]
    assert moved["revision"] == policy["revision"] + 1
    page = client.get("/console/policies").text
    assert page.index(ids[1]) < page.index(ids[0])
    r = client.post(
        f"/console/policies/{policy['id']}/move",
        data={"csrf": csrf, "index": "0", "direction": "up"},
    )
    assert r.status_code == 422 and "no entry can move up from 0" in r.text


def test_key_lifecycle_and_config_edits(cp: Any) -> None:
    client = _signed_in(cp)
    csrf = _csrf(client)
    created = client.post(
        "/console/keys",
        data={"name": "lifecycle", "csrf": csrf, "config": '{"models_allowed": ["gpt-4o"]}'},
    )
    key_id = re.search(r'href="/console/keys/(vk_\w+)"', created.text)
    assert key_id
    kid = key_id.group(1)
    admin = httpx.Client(
        base_url=f"{cp.url}/api/admin",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert admin.get(f"/virtual-keys/{kid}").json()["config"]["models_allowed"] == ["gpt-4o"]
    # Removing a field from the document clears it.
    r = client.post(f"/console/keys/{kid}/config", data={"csrf": csrf, "config": "{}"})
    assert r.status_code == 303
    assert "models_allowed" not in admin.get(f"/virtual-keys/{kid}").json()["config"]
    # … at any depth (the service takes a merge patch, where objects merge).
    nested = '{"rate_limits": {"rpm": 5, "tpm": 1000}}'
    r = client.post(f"/console/keys/{kid}/config", data={"csrf": csrf, "config": nested})
    assert r.status_code == 303
    r = client.post(
        f"/console/keys/{kid}/config", data={"csrf": csrf, "config": '{"rate_limits": {"rpm": 5}}'}
    )
    assert r.status_code == 303
    assert admin.get(f"/virtual-keys/{kid}").json()["config"] == {"rate_limits": {"rpm": 5}}
    # An edit made on a page opened before someone else's change is refused, not applied.
    opened = re.search(r'name="revision" value="(\d+)"', client.get(f"/console/keys/{kid}").text)
    assert opened
    admin.patch(f"/virtual-keys/{kid}", json={"config": {"tags": ["meanwhile"]}})
    r = client.post(
        f"/console/keys/{kid}/config",
        data={"csrf": csrf, "config": "{}", "revision": opened.group(1)},
    )
    assert r.status_code == 409 and "the key changed since this page was opened" in r.text
    assert admin.get(f"/virtual-keys/{kid}").json()["config"]["tags"] == ["meanwhile"]
    r = client.post(f"/console/keys/{kid}/config", data={"csrf": csrf, "config": "[1]"})
    assert r.status_code == 422 and "config: must be a JSON object" in r.text
    for verb, status in (("disable", "disabled"), ("enable", "active"), ("revoke", "revoked")):
        r = client.post(f"/console/keys/{kid}/{verb}", data={"csrf": csrf})
        assert r.status_code == 303, verb
        assert admin.get(f"/virtual-keys/{kid}").json()["status"] == status
    page = client.get(f"/console/keys/{kid}").text
    assert "Rotate secret" not in page and "status-revoked" in page


def test_cookie_is_secure_over_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, control = _app(tmp_path)
    monkeypatch.delenv("TOLLWAY_CONSOLE_TRUST_PROXY", raising=False)

    async def sign_in(scheme: str, headers: dict[str, str]) -> str:
        client = app.test_client()
        r = await client.post(
            "/console/login", form={"token": ADMIN_TOKEN}, headers=headers, scheme=scheme
        )
        assert r.status_code == 303, await r.get_data(as_text=True)
        return str(r.headers["set-cookie"])

    async def run() -> None:
        assert "Secure" in await sign_in("https", {"origin": "https://localhost"})
        assert "Secure" not in await sign_in("http", {"origin": "http://localhost"})
        proxied = {"origin": "https://localhost", "x-forwarded-proto": "https"}
        # Not trusted by default: the origin (https) then differs from the connection (http).
        client = app.test_client()
        r = await client.post("/console/login", form={"token": ADMIN_TOKEN}, headers=proxied)
        assert r.status_code == 403
        monkeypatch.setenv("TOLLWAY_CONSOLE_TRUST_PROXY", "true")
        assert "Secure" in await sign_in("http", proxied)

    try:
        asyncio.run(run())
    finally:
        control.close()
