"""The internal gateway protocol against a real ``tollway control-plane`` subprocess."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from control_plane_helpers import (
    INTERNAL,
    JWT_SECRET,
    PEPPER,
    ControlPlaneProcess,
    start_control_plane,
    stop,
    tollway,
    verify_response,
)

from tollway.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from tollway_control_plane._util import now
from tollway_control_plane.store import Store

RESOLVE = "/api/internal/gateway/resolve-key"
CHANGES = "/api/internal/gateway/changes"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    proc = start_control_plane(tmp_path_factory.mktemp("cp") / "data")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def store(cp: ControlPlaneProcess) -> Iterator[Store]:
    """The same store, opened from the test process (as the CLI would)."""
    s = Store.open(cp.data_dir / "tollway.db", PEPPER, allow_private_base_urls=True)
    yield s
    s.close()


def resolve(cp: ControlPlaneProcess, secret: str) -> httpx.Response:
    body = orjson.dumps({"key_presented": secret, "gateway_node_id": "gw-test"})
    response = cp.internal("POST", RESOLVE, body)
    verify_response(response, "POST", RESOLVE)
    return response


def rejection(cp: ControlPlaneProcess, secret: str) -> tuple[str, str]:
    response = resolve(cp, secret)
    assert response.status_code == 401, response.text
    err = response.json()["error"]
    assert err["type"] == "invalid_api_key"
    return err["code"], err["message"]


def config(
    cp: ControlPlaneProcess, vk_id: str, token: str, etag: str | None = None
) -> httpx.Response:
    path = f"/api/internal/gateway/config/{vk_id}"
    headers = {"authorization": f"Bearer {token}"}
    if etag:
        headers["if-none-match"] = etag
    response = cp.internal("GET", path, headers=headers)
    verify_response(response, "GET", path)
    return response


def test_health(cp: ControlPlaneProcess) -> None:
    response = httpx.get(f"{cp.url}/api/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_resolve_key_issues_a_jwt(cp: ControlPlaneProcess, store: Store) -> None:
    key, secret = store.create_key(name="backend")
    response = resolve(cp, secret)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["vk_id"], data["revision"]) == (key.id, 1)
    claims = jwt.decode(
        data["jwt"],
        JWT_SECRET,
        algorithms=["HS256"],
        audience="tollway-gateway",
        issuer="tollway-control-plane",
    )
    assert claims["sub"] == key.id and claims["rev"] == 1
    assert claims["exp"] == claims["iat"] + 900 == data["expires_at"]
    assert abs(claims["iat"] - time.time()) < 60


def test_resolve_key_rejections(cp: ControlPlaneProcess, store: Store) -> None:
    key, secret = store.create_key(name="k")
    code, message = rejection(cp, secret[:-3] + ("000" if not secret.endswith("000") else "111"))
    assert code == "unknown_key" and "not known" in message

    store.disable_key(key.id)
    code, message = rejection(cp, secret)
    assert code == "disabled" and f"tollway virtual-keys enable {key.id}" in message
    store.enable_key(key.id)
    assert resolve(cp, secret).status_code == 200

    store.update_key(key.id, expires_at=now() - timedelta(minutes=1))
    code, message = rejection(cp, secret)
    assert code == "expired" and "expired at" in message
    store.update_key(key.id, expires_at=None)

    store.revoke_key(key.id)
    code, message = rejection(cp, secret)
    assert code == "revoked" and "final" in message
    # Messages never carry more of the secret than its display prefix.
    assert secret not in message and secret[18:] not in message


def test_rotated_secret_works_for_its_grace_period(cp: ControlPlaneProcess, store: Store) -> None:
    key, old = store.create_key(name="rotating")
    _, new = store.rotate_key(key.id)
    first, second = resolve(cp, old), resolve(cp, new)
    assert first.status_code == second.status_code == 200
    assert first.json()["vk_id"] == second.json()["vk_id"] == key.id
    assert first.json()["revision"] == 2
    store.set_previous_valid_until(key.id, now() - timedelta(seconds=1))
    code, message = rejection(cp, old)
    assert code == "unknown_key" and "rotated" in message
    assert resolve(cp, new).status_code == 200


def test_config_bundle_etag_and_304(cp: ControlPlaneProcess, store: Store) -> None:
    openai = store.create_provider(
        type="openai",
        name="bundle-openai",
        api_key="sk-bundle-openai-1234",
        base_url="http://127.0.0.1:9/v1",
        rpm=60,
    )
    anthropic = store.create_provider(
        type="anthropic", name="bundle-anthropic", api_key="sk-ant-bundle-5678"
    )
    policy = store.create_routing_policy(
        name="bundle-policy", providers=f"{openai.id},{anthropic.id}:claude-sonnet-4-5"
    )
    key, secret = store.create_key(
        name="bundled",
        scope="project",
        config={"models_allowed": ["gpt-4o*"], "rate_limits": {"rpm": 5}},
        routing_policy_id=policy.id,
        principal_id="user-7",
    )
    token = resolve(cp, secret).json()["jwt"]
    response = config(cp, key.id, token)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert {k: bundle[k] for k in ("vk_id", "revision", "name", "display_prefix", "status")} == {
        "vk_id": key.id,
        "revision": 1,
        "name": "bundled",
        "display_prefix": secret[:18],
        "status": "active",
    }
    assert (bundle["organization_id"], bundle["team_id"], bundle["project_id"]) == (
        "org_default",
        "team_default",
        "proj_default",
    )
    assert bundle["principal_id"] == "user-7" and bundle["expires_at"] is None
    assert bundle["config"] == {"models_allowed": ["gpt-4o*"], "rate_limits": {"rpm": 5}}
    # The key's project's OTLP ingest token (derived; only its hash is stored).
    assert set(bundle["extras"]) == {"otel_auth_token"}
    assert bundle["extras"]["otel_auth_token"].startswith("lw_it_")
    # Ordered by a routing policy: the gateway adds none of its config-file providers.
    assert bundle["routing_policy_id"] == policy.id
    assert [(p["id"], p["api_key"], p["model"], p["rpm"]) for p in bundle["providers"]] == [
        (openai.id, "sk-bundle-openai-1234", None, 60),
        (anthropic.id, "sk-ant-bundle-5678", "claude-sonnet-4-5", None),
    ]
    assert set(bundle["providers"][0]) == {
        "id", "name", "type", "base_url", "api_key", "models", "priority", "config", "revision",
        "rpm", "tpm", "rpd", "model", "weight",
    }  # fmt: skip
    assert bundle["routing_strategy"] == "ordered"
    etag = response.headers["etag"]
    assert etag.startswith(f'"{key.id}:1:') and len(etag) == len(f'"{key.id}:1:"') + 16

    not_modified = config(cp, key.id, token, etag)
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag

    store.update_key(key.id, config={"rate_limits": {"rpm": 10}})
    changed = config(cp, key.id, token, etag)
    assert changed.status_code == 200 and changed.json()["revision"] == 2
    assert changed.headers["etag"].startswith(f'"{key.id}:2:')
    # A provider change changes the bundle (and so its ETag) without a key revision.
    store.update_provider(anthropic.id, api_key="sk-ant-bundle-rotated")
    again = config(cp, key.id, token, changed.headers["etag"])
    assert again.status_code == 200
    assert again.json()["providers"][1]["api_key"] == "sk-ant-bundle-rotated"


def test_config_needs_the_keys_jwt(cp: ControlPlaneProcess, store: Store) -> None:
    key, secret = store.create_key(name="jwt")
    _, other_secret = store.create_key(name="other")
    token = resolve(cp, secret).json()["jwt"]
    claims = {"sub": key.id, "iss": "tollway-control-plane", "aud": "tollway-gateway"}
    fresh = {"iat": int(time.time()), "exp": int(time.time()) + 60}
    for bad in (
        "not-a-jwt",
        resolve(cp, other_secret).json()["jwt"],  # another key's
        jwt.encode({**claims, "iat": 1, "exp": 2}, JWT_SECRET),  # expired
        jwt.encode({**claims, **fresh}, b"wrong-secret-wrong-secret-wrong-secret"),
        jwt.encode({**claims, **fresh, "aud": "someone-else"}, JWT_SECRET),
    ):
        response = config(cp, key.id, bad)
        assert response.status_code == 401, (bad, response.text)
        assert response.json()["error"]["type"] == "invalid_token"
    response = cp.internal("GET", f"/api/internal/gateway/config/{key.id}")
    assert response.status_code == 401
    store.delete_key(key.id)
    response = config(cp, key.id, token)
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def _changes(cp: ControlPlaneProcess, since: int | None, timeout_s: float = 0) -> dict[str, Any]:
    params: dict[str, Any] = {"timeout_s": timeout_s}
    if since is not None:
        params["since"] = since
    response = cp.internal("GET", CHANGES, params=params, timeout=timeout_s + 10)
    verify_response(response, "GET", CHANGES)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_changes_feed(cp: ControlPlaneProcess, store: Store) -> None:
    current = store.max_change_id()
    assert _changes(cp, None) == {"cursor": current, "events": []}
    assert _changes(cp, -1, 5) == {"cursor": current, "events": []}  # at once, despite timeout
    key, _ = store.create_key(name="feed")
    provider = store.create_provider(type="openai", name="feed-provider")
    data = _changes(cp, current, 5)
    assert data["events"] == [
        {"id": current + 1, "kind": "vk_updated", "vk_id": key.id, "provider_id": None},
        {"id": current + 2, "kind": "provider_updated", "vk_id": None, "provider_id": provider.id},
    ]
    assert data["cursor"] == current + 2
    # Nothing new: waits for timeout_s, then answers with no events and the same cursor.
    started = time.monotonic()
    assert _changes(cp, current + 2, 0.5) == {"cursor": current + 2, "events": []}
    assert time.monotonic() - started >= 0.45
    # A cursor from the future (a reset store) starts over from the current one.
    assert _changes(cp, current + 1000, 5) == {"cursor": current + 2, "events": []}
    response = cp.internal("GET", CHANGES, params={"since": "abc"})
    assert response.status_code == 400


def test_long_poll_wakes_on_a_cli_write(
    cp: ControlPlaneProcess, store: Store, tmp_path: Path
) -> None:
    key, _ = store.create_key(name="to-revoke")
    cursor = store.max_change_id()
    result: dict[str, Any] = {}

    def poll() -> None:
        result["data"] = _changes(cp, cursor, 20)
        result["at"] = time.monotonic()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)  # the poll is waiting
    assert "data" not in result
    tollway(cp.data_dir, "virtual-keys", "revoke", key.id)
    written = time.monotonic()
    thread.join(timeout=10)
    assert result["data"]["events"] == [
        {"id": cursor + 1, "kind": "vk_revoked", "vk_id": key.id, "provider_id": None}
    ]
    assert result["at"] - written < 1.0


def test_signature_is_required(cp: ControlPlaneProcess, store: Store) -> None:
    _, secret = store.create_key(name="sig")
    body = orjson.dumps({"key_presented": secret, "gateway_node_id": "gw"})

    def refused(response: httpx.Response, method: str = "POST", path: str = RESOLVE) -> str:
        assert response.status_code == 401, response.text
        verify_response(response, method, path)  # even refusals are signed
        err = response.json()["error"]
        assert err["type"] == "invalid_signature"
        return str(err["message"])

    # Unsigned.
    assert "missing" in refused(httpx.post(cp.url + RESOLVE, content=body))
    # Tampered body: signed for one body, sent with another.
    signed = signed_headers(INTERNAL, "POST", RESOLVE, body)
    tampered = body.replace(b"gw", b"gx")
    assert "mismatch" in refused(httpx.post(cp.url + RESOLVE, content=tampered, headers=signed))
    # Stale and future timestamps (±300 s).
    assert "off" in refused(cp.internal("POST", RESOLVE, body, now=time.time() - 301))
    assert "off" in refused(cp.internal("POST", RESOLVE, body, now=time.time() + 330))
    assert cp.internal("POST", RESOLVE, body, now=time.time() - 250).status_code == 200
    # The wrong secret.
    assert "mismatch" in refused(cp.internal("POST", RESOLVE, body, secret=b"not-the-secret"))
    # Signed for another path.
    other = signed_headers(INTERNAL, "POST", "/api/internal/gateway/other", body)
    assert "mismatch" in refused(httpx.post(cp.url + RESOLVE, content=body, headers=other))
    # GETs are signed too (empty body).
    assert "missing" in refused(httpx.get(cp.url + CHANGES, params={"since": -1}), "GET", CHANGES)
    response = cp.internal("GET", CHANGES, params={"since": -1})
    assert response.status_code == 200
    assert {SIGNATURE_HEADER.lower(), TIMESTAMP_HEADER.lower()} <= set(response.headers)


def test_bad_resolve_body(cp: ControlPlaneProcess) -> None:
    for body in (b"{}", b"not json", b'{"key_presented": 3}'):
        response = cp.internal("POST", RESOLVE, body)
        verify_response(response, "POST", RESOLVE)
        assert response.status_code == 400 and response.json()["error"]["type"] == "bad_request"


def test_limits(cp: ControlPlaneProcess) -> None:
    big = b'{"key_presented": "' + b"x" * 70_000 + b'"}'
    response = httpx.post(cp.url + RESOLVE, content=big)  # refused before it is even read
    verify_response(response, "POST", RESOLVE)
    assert response.status_code == 413
    for timeout in ("nan", "soon"):
        response = cp.internal("GET", CHANGES, params={"since": 0, "timeout_s": timeout})
        assert response.status_code == 400
    # timeout_s is capped at 30 s and floored at 0.
    started = time.monotonic()
    data = _changes(cp, None, -5)
    assert data["events"] == [] and time.monotonic() - started < 5


# --- ledger and spend (the budgets plugin's outbox and counters) ------------------------------

LEDGER = "/api/internal/gateway/ledger"
SPEND = "/api/internal/gateway/spend"


def _entry(rid: str, cost: int, **over: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "created_at": "2026-03-02T10:00:00.000000Z",
        "organization_id": "org_default",
        "team_id": "team_default",
        "project_id": "proj_ledger_test",
        "vk_id": "vk_ledger_test",
        "model": "gpt-4o",
        "input_tokens": 12,
        "output_tokens": 3,
        "cost_micro_usd": cost,
        "status": 200,
        **over,
    }


def test_ledger_batches_are_idempotent(cp: ControlPlaneProcess, store: Store) -> None:
    batch = {"gateway_node_id": "gw-a", "entries": [_entry(f"grq_l{i}", 10 * i) for i in range(50)]}
    first = cp.internal("POST", LEDGER, orjson.dumps(batch))
    verify_response(first, "POST", LEDGER)
    assert first.status_code == 200 and first.json() == {"accepted": 50, "inserted": 50}
    # The outbox retries a batch whose answer it never saw: nothing is debited twice.
    batch["entries"].append(_entry("grq_l50", 500))
    again = cp.internal("POST", LEDGER, orjson.dumps(batch))
    assert again.json() == {"accepted": 51, "inserted": 1}
    rows = store.db.query(
        "SELECT COUNT(*) AS n, SUM(cost_usd) AS s, MIN(gateway_node_id) AS node FROM ledger "
        "WHERE project_id = 'proj_ledger_test'"
    )
    total = sum(10 * i for i in range(51))
    assert (rows[0]["n"], rows[0]["s"], rows[0]["node"]) == (51, total, "gw-a")

    query = {
        "organization_id": "org_default",
        "scope_type": "project",
        "scope_id": "proj_ledger_test",
        "since": "2026-03-02T00:00:00Z",
    }
    spend = cp.internal(
        "POST",
        SPEND,
        orjson.dumps({"queries": [query, {**query, "until": "2026-03-02T10:00:00Z"}]}),
    )
    verify_response(spend, "POST", SPEND)
    assert spend.json() == {"spend_micro_usd": [total, 0]}


def test_ledger_and_spend_refuse_bad_bodies(cp: ControlPlaneProcess) -> None:
    for path, body in (
        (LEDGER, b"{}"),
        (LEDGER, orjson.dumps({"entries": [_entry("grq_bad", -5)]})),
        (LEDGER, orjson.dumps({"entries": [{"request_id": "x"}]})),
        (SPEND, orjson.dumps({"queries": [{"scope_type": "galaxy"}]})),
        (SPEND, b"[]"),
    ):
        response = cp.internal("POST", path, body)
        verify_response(response, "POST", path)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["type"] == "bad_request"
    # A batch may be far bigger than other internal requests (64 KiB) …
    big = {"entries": [_entry(f"grq_big{i}", 1, model="m" * 200) for i in range(1000)]}
    body = orjson.dumps(big)
    assert len(body) > 256 * 1024
    assert cp.internal("POST", LEDGER, body).json() == {"accepted": 1000, "inserted": 1000}
    # … but not unsigned.
    assert httpx.post(cp.url + LEDGER, content=body).status_code == 401
