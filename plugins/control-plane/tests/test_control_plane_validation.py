"""Admin input validation (every field checked before the store is touched, 4xx never 5xx) and
listings that survive a badly stored row — on SQLite and PostgreSQL, through the service (what
the CLI and the admin API share), the admin API and the CLI.

The cases are those schemathesis found (issue 18): each failed with a 500 before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from control_plane_helpers import (  # noqa: F401 (fixtures)
    PEPPER,
    cli_env,
    pg_url,
    start_control_plane,
    stop,
    store_url,
    tollway,
)

from tollway_control_plane._util import format_time, parse_time
from tollway_control_plane.admin import openapi
from tollway_control_plane.runtime import open_store
from tollway_control_plane.service import Service
from tollway_control_plane.store import NotFound, Store, ValidationError

TOKEN = "admin-token-for-validation-tests-0"


@pytest.fixture
def service(store_url: str) -> Iterator[Service]:  # noqa: F811
    svc = Service(Store.open(store_url, PEPPER, allow_private_base_urls=True))
    yield svc
    svc.close()


def refused(service: Service, op: str, body: Any = None, id: str | None = None) -> list[str]:
    with pytest.raises(ValidationError) as info:
        service.call(op, id, body)
    return info.value.problems


# --- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "0287-12-31T21:45:48Z",  # stored as "287-12-31T…", which then broke every listing
        "0009-02-16T19:37:17Z",
        "1999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-05:00",  # past datetime.max once in UTC: OverflowError
        "0001-01-01T00:00:00+01:00",
        "2027-01-01T00:00:00",  # a time of day without an offset
        "next tuesday",
        "2027-01-01T00:00:00\x00Z",
    ],
)
def test_expires_at_out_of_range_is_refused_and_nothing_is_stored(
    service: Service, value: str
) -> None:
    problems = refused(service, "keys.create", {"name": "k", "expires_at": value})
    assert len(problems) == 1 and problems[0].startswith("expires_at: "), problems
    assert service.call("keys.list") == []
    key = service.call("keys.create", body={"name": "k"})
    assert refused(service, "keys.update", {"expires_at": value}, id=key["id"])[0].startswith(
        "expires_at: "
    )
    assert service.call("keys.get", key["id"])["expires_at"] is None


def test_expires_at_in_range(service: Service) -> None:
    for value, stored in [
        ("2027-01-01", "2027-01-01T00:00:00Z"),
        ("2027-01-01T01:00:00+01:00", "2027-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
        ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
    ]:
        key = service.call("keys.create", body={"name": "k", "expires_at": value})
        assert key["expires_at"] == stored
    statuses = sorted(k["status"] for k in service.call("keys.list"))
    assert statuses == ["active", "active", "active", "expired"]


def test_time_formatting_pads_the_year() -> None:
    dt = datetime(287, 12, 31, 21, 45, 48, tzinfo=UTC)
    assert format_time(dt, micros=False) == "0287-12-31T21:45:48Z"
    assert parse_time(format_time(dt)) == dt
    with pytest.raises(ValueError, match="out of the range"):
        parse_time("0001-01-01T00:00:00+01:00")


# --- money and integers -----------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1e17, 10**13, "9223372036855", "1e400", -1, "NaN", True, []])
def test_budget_limit_beyond_the_store_is_refused(service: Service, limit: Any) -> None:
    problems = refused(service, "budgets.create", {"scope": "organization", "limit_usd": limit})
    assert len(problems) == 1 and problems[0].startswith("limit_usd: "), problems
    budget = service.call("budgets.create", body={"scope": "organization", "limit_usd": 5})
    assert refused(service, "budgets.update", {"limit_usd": limit}, id=budget["id"])[0].startswith(
        "limit_usd: "
    )
    # Checked before the store is asked whether the budget exists.
    assert refused(service, "budgets.update", {"limit_usd": limit}, id="bud_nope")[0].startswith(
        "limit_usd: "
    )
    assert [b["limit_usd"] for b in service.call("budgets.list")] == ["5.00"]


def test_the_largest_budget_limit_fits(service: Service) -> None:
    budget = service.call(
        "budgets.create", body={"scope": "organization", "limit_usd": "9223372036854.775807"}
    )
    assert budget["limit_micro_usd"] == 2**63 - 1
    assert service.call("budgets.list")[0]["limit_usd"] == "9223372036854.775807"


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", 2**63), ("priority", -(2**63) - 1), ("rpm", 2**63), ("tpm", 0), ("rpd", 1.5)],
)
def test_provider_integers_beyond_64_bits_are_refused(
    service: Service, field: str, value: Any
) -> None:
    body = {"type": "openai", "name": "p", "api_key": "sk-x", field: value}
    assert refused(service, "providers.create", body)[0].startswith(f"{field}: ")
    assert service.call("providers.list") == []


# --- strings, ids, configs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "body", "field"),
    [
        ("keys.create", {"name": "a\x00b"}, "name"),  # PostgreSQL text holds no NUL
        ("keys.create", {"name": "x" * 201}, "name"),
        ("keys.create", {"name": "k", "principal_id": "p\x00"}, "principal_id"),
        ("keys.create", {"name": "k", "principal_id": "p" * 257}, "principal_id"),
        ("keys.create", {"name": "k", "routing_policy_id": "rp x"}, "routing_policy_id"),
        ("keys.create", {"name": "k", "scope": "project:\x00"}, "scope"),
        ("keys.create", {"name": "k", "env": "prod"}, "env"),
        ("scopes.create", {"type": "team", "name": "t", "parent_id": "org\x00"}, "parent_id"),
        ("scopes.create", {"type": "planet", "name": "t"}, "type"),
        ("budgets.create", {"scope": "principal:\x00", "limit_usd": 1}, "scope"),
        ("budgets.create", {"scope": "organization", "limit_usd": 1, "window": "year"}, "window"),
        ("policies.create", {"name": "p", "providers": [{"provider_id": "a\x00"}]}, "providers"),
        ("providers.create", {"type": "openai", "name": "p", "api_key": "sk\x00"}, "api_key"),
        ("providers.create", {"type": "openai", "name": "p", "models": ["m"] * 1001}, "models"),
    ],
)
def test_bad_strings_are_refused_naming_the_field(
    service: Service, op: str, body: dict[str, Any], field: str
) -> None:
    problems = refused(service, op, body)
    assert problems[0].startswith(f"{field}: "), problems


def test_config_size_and_depth_are_bounded(service: Service) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    problems = refused(service, "keys.create", {"name": "k", "config": {"tags": [deep]}})
    assert problems == ["config: nested deeper than 16 levels"]
    big = {"tags": ["x" * 1000] * 100}
    assert refused(service, "keys.create", {"name": "k", "config": big})[0].startswith(
        "config: at most 65536 bytes"
    )
    huge = {"type": "openai", "name": "p", "config": {"n": 2**64}}
    assert refused(service, "providers.create", huge) == [
        "config: integers in it must fit in 64 bits"
    ]


@pytest.mark.parametrize("bad_id", ["\x00", "a b", "x" * 129, "vk_\udc80", ""])
def test_malformed_ids_are_not_found(service: Service, bad_id: str) -> None:
    for op in ("keys.get", "budgets.delete", "providers.get", "policies.get"):
        with pytest.raises(NotFound, match="an id is 1 to 128"):
            service.call(op, bad_id)


# --- listings survive badly stored rows -------------------------------------------------------


def _store_badly(service: Service) -> dict[str, str]:
    """Rows as an older version could store them: an expiry 'Y287' and unreadable JSON."""
    expired = service.call("keys.create", body={"name": "y287"})["id"]
    broken = service.call("keys.create", body={"name": "broken"})["id"]
    fine = service.call("keys.create", body={"name": "fine"})["id"]
    with service.store.db.transaction() as tx:
        tx.execute(
            "UPDATE virtual_keys SET expires_at = ? WHERE id = ?", ("287-12-31T21:45:48Z", expired)
        )
        tx.execute("UPDATE virtual_keys SET config = ? WHERE id = ?", ("{not json", broken))
    return {"expired": expired, "broken": broken, "fine": fine}


def test_a_listing_never_dies_on_a_bad_row(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _store_badly(service)
    with caplog.at_level(logging.WARNING, logger="tollway_control_plane"):
        listed = {k["id"]: k for k in service.call("keys.list")}
    # Shown with what can be shown (fail closed: an unreadable expiry is expired) …
    assert listed[ids["expired"]]["status"] == "expired"
    assert listed[ids["expired"]]["expires_at"] == "287-12-31T21:45:48Z"
    assert listed[ids["fine"]]["status"] == "active"
    # … or left out with a logged warning.
    assert ids["broken"] not in listed
    assert any(ids["broken"] in r.getMessage() for r in caplog.records)
    # The badly stored key can be repaired and deleted by its id.
    fixed = service.call("keys.update", ids["expired"], {"expires_at": "2030-01-01T00:00:00Z"})
    assert fixed["status"] == "active"
    service.call("keys.delete", ids["broken"])


def test_cli_lists_past_a_bad_row(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    tollway(data_dir, "virtual-keys", "create", "--name", "setup")
    store, _ = open_store(data_dir, cli_env(data_dir), environment="local")
    service = Service(store)
    try:
        ids = _store_badly(service)
    finally:
        service.close()
    proc = tollway(data_dir, "virtual-keys", "list")
    assert "Traceback" not in proc.stderr and ids["expired"] in proc.stdout
    assert "expired" in proc.stdout and ids["broken"] not in proc.stdout
    refusal = tollway(
        data_dir,
        "virtual-keys",
        "create",
        "--name",
        "k",
        "--expires-at",
        "0287-12-31T21:45:48Z",
        check=False,
    )
    assert refusal.returncode == 1 and "Traceback" not in refusal.stderr
    assert "refused: expires_at: '0287-12-31T21:45:48Z' is out of range" in refusal.stderr


# --- the admin API and its OpenAPI document ---------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data_dir = tmp_path_factory.mktemp("validation") / "data"
    cp = start_control_plane(data_dir, env=cli_env(data_dir, TOLLWAY_ADMIN_TOKEN=TOKEN))
    try:
        with httpx.Client(
            base_url=f"{cp.url}/api/admin",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ) as client:
            yield client
    finally:
        stop(cp.proc)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "POST",
            "/virtual-keys",
            {"name": "k", "expires_at": "0287-12-31T21:45:48Z"},
            "expires_at",
        ),
        ("POST", "/budgets", {"scope": "organization", "limit_usd": 1e17}, "limit_usd"),
        ("PATCH", "/budgets/bud_x", {"limit_usd": 1.0630472109978412e16}, "limit_usd"),
        ("POST", "/model-providers", {"type": "openai", "name": "p", "rpm": 2**63}, "rpm"),
    ],
)
def test_admin_api_answers_422_naming_the_field(
    api: httpx.Client, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = api.request(method, path, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error" and error["problems"][0].startswith(f"{field}: ")
    assert api.get("/virtual-keys").status_code == 200


def test_admin_api_malformed_path_id_is_404(api: httpx.Client) -> None:
    response = api.get("/virtual-keys/%00")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_openapi_document_states_the_limits() -> None:
    doc = openapi()
    keys = doc["paths"]["/api/admin/virtual-keys"]["post"]
    props = keys["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["expires_at"]["format"] == "date-time" and props["expires_at"]["maxLength"] == 64
    assert props["name"] == {"type": "string", "maxLength": 200, "minLength": 1}
    assert props["env"]["enum"] == ["live", "test"]
    assert set(keys["responses"]["201"]["links"]) >= {"get", "update", "delete", "rotate"}
    budget = doc["paths"]["/api/admin/budgets"]["post"]
    limit = budget["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert limit["limit_usd"]["oneOf"][0]["maximum"] == 9223372036854.775807
    providers = doc["paths"]["/api/admin/model-providers"]["post"]
    rpm = providers["requestBody"]["content"]["application/json"]["schema"]["properties"]["rpm"]
    assert rpm == {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 2**63 - 1,
        "description": "a positive limit; null: no limit",
    }
    param = doc["paths"]["/api/admin/virtual-keys/{id}"]["get"]["parameters"][0]
    assert param["schema"]["maxLength"] == 128 and "pattern" in param["schema"]
