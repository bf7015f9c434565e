"""The store, on SQLite and on PostgreSQL (same tests, same migrations)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from control_plane_helpers import PEPPER, pg_url, store_url  # noqa: F401 (fixtures)
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from tollway.keys import check_key_format
from tollway_control_plane._crypto import CredentialError
from tollway_control_plane._db import migrations
from tollway_control_plane._util import format_time, now
from tollway_control_plane.store import (
    Conflict,
    KeyRejected,
    NotFound,
    Store,
    ValidationError,
    check_ledger_entry,
    check_prices,
    format_usd,
    parse_usd,
    window_start,
)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    s = Store.open(store_url, PEPPER, allow_private_base_urls=True)
    yield s
    s.close()


def kinds(store: Store, since: int = 0) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.vk_id, e.provider_id) for e in store.changes_since(since)]


def rejected(store: Store, secret: str) -> str:
    with pytest.raises(KeyRejected) as info:
        store.resolve_secret(secret)
    return info.value.code


# --- opening ----------------------------------------------------------------------------------


def test_defaults_and_migrations(store: Store, store_url: str) -> None:  # noqa: F811
    assert [o.id for o in store.list_organizations()] == ["org_default"]
    assert [(t.id, t.name) for t in store.list_teams()] == [("team_default", "default")]
    assert [(p.id, p.team_id) for p in store.list_projects()] == [("proj_default", "team_default")]
    applied = store.db.applied_versions()
    assert applied == {m.version for m in migrations()}
    assert {1, 2, 3, 4, 5, 6, 7, 8} <= applied
    assert store.store_id.startswith("store_")
    # Opening again applies nothing and keeps the data (and the store's id).
    store.create_key(name="k")
    again = Store.open(store_url, PEPPER)
    try:
        assert again.db.migrate() == []
        assert len(again.list_keys()) == 1
        assert len(again.list_organizations()) == 1
        assert again.store_id == store.store_id
    finally:
        again.close()


# --- keys -------------------------------------------------------------------------------------


def test_create_key(store: Store) -> None:
    key, secret = store.create_key(name="backend", env="test")
    assert check_key_format(secret) == secret and len(secret) == 40
    assert secret.startswith("lw_vk_test_")
    assert key.id.startswith("vk_") and key.display_prefix == secret[:18]
    assert (
        key.status == "active"
        and key.revision == 1
        and key.scope.label == "organization:org_default"
    )
    # The secret is not stored, nor returned again.
    dumped = str(store.db.query("SELECT * FROM virtual_keys"))
    assert secret not in dumped
    assert "secret" not in str(store.get_key(key.id).to_json())
    assert store.resolve_secret(secret).id == key.id
    assert rejected(store, secret[:-3] + "000") == "unknown_key"
    assert kinds(store) == [("vk_updated", key.id, None)]


def test_independent_secrets(store: Store) -> None:
    """Ids and secrets minted together share no randomness (python-ulid is monotonic)."""
    (k1, s1), (k2, s2) = store.create_key(name="a"), store.create_key(name="b")
    ulids = [ULID.from_str(u) for u in (s1[11:37], s2[11:37], k1.id[3:], k2.id[3:])]
    randomness = sorted(int(u) & ((1 << 80) - 1) for u in ulids)
    assert all(b - a > 1 << 40 for a, b in pairwise(randomness))


def test_rotate(store: Store) -> None:
    key, old = store.create_key(name="k")
    rotated, new = store.rotate_key(key.id)
    assert new != old and rotated.display_prefix == new[:18]
    assert rotated.revision == key.revision + 1
    assert store.resolve_secret(old).id == key.id  # within the 24 h grace
    assert store.resolve_secret(new).id == key.id
    until = rotated.previous_valid_until
    assert until is not None
    assert (
        format_time(now() + timedelta(hours=23)) < until < format_time(now() + timedelta(hours=25))
    )
    # End the grace: the old secret stops, the new one works.
    store.set_previous_valid_until(key.id, now() - timedelta(seconds=1))
    assert rejected(store, old) == "unknown_key"
    assert store.resolve_secret(new).id == key.id
    # Rotating twice: only the secret being replaced keeps a grace period.
    _, newest = store.rotate_key(key.id)
    assert store.resolve_secret(new).id == key.id
    assert store.resolve_secret(newest).id == key.id
    assert rejected(store, old) == "unknown_key"
    assert [k for k, _, _ in kinds(store)] == [
        "vk_updated",
        "vk_rotated",
        "vk_rotated",
        "vk_rotated",
    ]


def test_revoke_is_final(store: Store) -> None:
    key, old = store.create_key(name="k")
    _, new = store.rotate_key(key.id)
    revoked = store.revoke_key(key.id)
    assert revoked.status == "revoked" and revoked.revoked_at
    assert rejected(store, new) == "revoked"
    assert rejected(store, old) == "revoked"  # the rotated-out secret too
    for op in (store.enable_key, store.disable_key, store.rotate_key):
        with pytest.raises(Conflict, match="revoked"):
            op(key.id)
    with pytest.raises(Conflict):
        store.update_key(key.id, name="x")
    cursor = store.max_change_id()
    assert store.revoke_key(key.id).status == "revoked"  # idempotent, no new event
    assert store.max_change_id() == cursor
    assert ("vk_revoked", key.id, None) in kinds(store)
    store.delete_key(key.id)
    with pytest.raises(NotFound):
        store.get_key(key.id)
    assert kinds(store)[-1] == ("vk_deleted", key.id, None)
    assert rejected(store, new) == "unknown_key"


def test_disable_enable_expire(store: Store) -> None:
    key, secret = store.create_key(name="k")
    assert store.disable_key(key.id).status == "disabled"
    assert rejected(store, secret) == "disabled"
    assert store.enable_key(key.id).status == "active"
    assert store.resolve_secret(secret).id == key.id
    past = store.update_key(key.id, expires_at="2001-02-03T04:05:06Z")
    assert past.expires_at == "2001-02-03T04:05:06Z"
    assert past.effective_status() == "expired" and past.to_json()["status"] == "expired"
    assert rejected(store, secret) == "expired"
    assert store.update_key(key.id, expires_at="2999-01-01").expires_at == "2999-01-01T00:00:00Z"
    assert store.resolve_secret(secret).id == key.id
    assert store.update_key(key.id, expires_at=None).expires_at is None
    with pytest.raises(ValidationError, match="expires_at"):
        store.update_key(key.id, expires_at="next tuesday")


def test_update_merges_config_and_null_clears(store: Store) -> None:
    key, _ = store.create_key(
        name="k",
        config={
            "models_allowed": ["gpt-4o*"],
            "rate_limits": {"rpm": 5, "tpm": 1000},
            "cache": {"mode": "respect"},
            "tags": ["a"],
        },
    )
    updated = store.update_key(
        key.id,
        config={
            "rate_limits": {"rpm": 10, "tpm": None},
            "cache": None,
            "model_aliases": {"fast": "gpt-4o-mini"},
        },
    )
    assert updated.config == {
        "models_allowed": ["gpt-4o*"],
        "rate_limits": {"rpm": 10},
        "model_aliases": {"fast": "gpt-4o-mini"},
        "tags": ["a"],
    }
    assert updated.revision == 2
    # Lists are replaced, not merged.
    assert store.update_key(key.id, config={"tags": ["b"]}).config["tags"] == ["b"]
    # A refused update changes nothing.
    with pytest.raises(ValidationError) as info:
        store.update_key(
            key.id, config={"rate_limits": {"rpm": "ten"}, "cache": {"mode": "always"}}
        )
    assert info.value.problems == [
        "rate_limits.rpm: must be an integer >= 1 (null: no limit) or null, not a string",
        "cache.mode: must be one of respect, disable, force, not 'always'",
    ]
    assert store.get_key(key.id).config["rate_limits"] == {"rpm": 10}
    # null for the whole config clears it.
    assert store.update_key(key.id, config=None).config == {}


def test_config_refused_on_create_with_paths(store: Store) -> None:
    with pytest.raises(ValidationError) as info:
        store.create_key(
            name="k",
            config={"policy_rules": {"tools": {"deny": ["^shell\\.", "(?<=x)y"]}}, "colour": "red"},
        )
    problems = info.value.problems
    assert problems[0].startswith("colour: unknown key (known: models_allowed, ")
    assert problems[1].startswith("policy_rules.tools.deny[1]: pattern '(?<=x)y' is not valid RE2")
    assert store.list_keys() == []
    assert store.max_change_id() == 0


def test_key_scopes(store: Store) -> None:
    team = store.create_team("ml")
    project = store.create_project("chat", team.id)
    k1, _ = store.create_key(name="a", scope="project")
    assert (k1.organization_id, k1.team_id, k1.project_id) == (
        "org_default",
        "team_default",
        "proj_default",
    )
    k2, _ = store.create_key(name="b", scope=f"project:{project.id}")
    assert (k2.team_id, k2.project_id, k2.scope.label) == (
        team.id,
        project.id,
        f"project:{project.id}",
    )
    k3, _ = store.create_key(name="c", scope=f"team:{team.id}")
    assert (k3.team_id, k3.project_id, k3.scope_type) == (team.id, None, "team")
    with pytest.raises(ValidationError, match="no project 'proj_nope'"):
        store.create_key(name="d", scope="project:proj_nope")
    with pytest.raises(ValidationError, match="is not a scope"):
        store.create_key(name="d", scope="galaxy")


# --- providers and routing ----------------------------------------------------------------


def test_provider_credentials_encrypted(store: Store, store_url: str) -> None:  # noqa: F811
    secret = "sk-proj-supersecretvalue-abcd"
    provider = store.create_provider(type="openai", name="openai-prod", api_key=secret)
    assert provider.id.startswith("mp_")
    assert provider.to_json()["api_key"] == "sk-…abcd"
    assert secret not in str(store.db.query("SELECT * FROM model_providers"))
    assert store.provider_credential(provider.id) == secret
    key, _ = store.create_key(name="k")
    assert store.bundle(key.id)["providers"][0]["api_key"] == secret
    # Another pepper cannot read it.
    other = Store.open(store_url, b"another pepper")
    try:
        with pytest.raises(CredentialError, match="pepper"):
            other.provider_credential(provider.id)
    finally:
        other.close()
    updated = store.update_provider(provider.id, api_key="sk-new-credential-9876")
    assert updated.to_json()["api_key"] == "sk-…9876" and updated.revision == 2
    assert store.provider_credential(provider.id) == "sk-new-credential-9876"
    assert [k for k, _, p in kinds(store) if p == provider.id] == ["provider_updated"] * 2


def test_provider_validation(store: Store) -> None:
    with pytest.raises(ValidationError, match="not a provider type"):
        store.create_provider(type="cohere", name="x")
    with pytest.raises(ValidationError, match=r"custom .* needs one"):
        store.create_provider(type="custom", name="x")
    with pytest.raises(ValidationError, match="rpm"):
        store.create_provider(type="openai", name="x", rpm=0)
    store.allow_private_base_urls = False
    with pytest.raises(ValidationError, match="SSRF"):
        store.create_provider(type="openai", name="x", base_url="http://10.1.2.3/v1")
    store.create_provider(type="openai", name="x", base_url="https://api.example.com/v1")
    with pytest.raises(Conflict, match="already has a provider named 'x'"):
        store.create_provider(type="anthropic", name="x")


def test_provider_proxy_is_validated_and_shown_masked(store: Store) -> None:
    with pytest.raises(ValidationError, match=r"config.proxy: .*SOCKS"):
        store.create_provider(type="openai", name="x", config={"proxy": "socks5://p:1080"})
    p = store.create_provider(
        type="openai", name="x", config={"proxy": "http://user:s3cret@proxy.internal:3128"}
    )
    shown = p.to_json()
    assert shown["config"]["proxy"] == "http://user:****@proxy.internal:3128"
    assert "s3cret" not in str(shown)
    # The gateway gets the real URL in the key's bundle (as it gets the API key).
    assert p.config["proxy"] == "http://user:s3cret@proxy.internal:3128"
    direct = store.create_provider(type="anthropic", name="y", config={"proxy": ""})
    assert direct.to_json()["config"]["proxy"] == ""


def test_scope_inheritance_of_providers(store: Store) -> None:
    team_a, team_b = store.create_team("a"), store.create_team("b")
    proj_a1, proj_a2 = store.create_project("a1", team_a.id), store.create_project("a2", team_a.id)
    org = store.create_provider(type="openai", name="org", priority=5)
    org_first = store.create_provider(type="anthropic", name="org-first", priority=1)
    org_tie = store.create_provider(type="openai", name="org-tie", priority=5)  # newer: after org
    ta = store.create_provider(type="openai", name="team-a", scope=f"team:{team_a.id}", priority=2)
    store.create_provider(type="openai", name="team-b", scope=f"team:{team_b.id}")
    pa1 = store.create_provider(
        type="openai", name="proj-a1", scope=f"project:{proj_a1.id}", priority=9
    )
    store.create_provider(type="openai", name="proj-a2", scope=f"project:{proj_a2.id}")

    def chain(scope: str) -> list[str]:
        key, _ = store.create_key(name=scope, scope=scope)
        return [p.id for p, model in store.provider_chain(key)]

    assert chain("organization") == [org_first.id, org.id, org_tie.id]
    assert chain(f"team:{team_a.id}") == [org_first.id, ta.id, org.id, org_tie.id]
    assert chain(f"project:{proj_a1.id}") == [org_first.id, ta.id, org.id, org_tie.id, pa1.id]
    key, _ = store.create_key(name="bundle", scope=f"project:{proj_a1.id}")
    bundle = store.bundle(key.id)
    assert [p["name"] for p in bundle["providers"]] == [
        "org-first",
        "team-a",
        "org",
        "org-tie",
        "proj-a1",
    ]
    assert bundle["providers"][1]["model"] is None


def test_routing_policy_chain_with_pinned_models(store: Store) -> None:
    openai = store.create_provider(type="openai", name="openai", api_key="sk-openai-0000000001")
    anthropic = store.create_provider(
        type="anthropic", name="anthropic", api_key="sk-ant-000000000002", priority=-1
    )
    team = store.create_team("t")
    team_only = store.create_provider(type="openai", name="team-only", scope=f"team:{team.id}")
    policy = store.create_routing_policy(
        name="openai-then-claude", providers=f"{openai.id},{anthropic.id}:claude-sonnet-4-5"
    )
    assert policy.id.startswith("rp_") and not policy.is_default
    assert [str(e) for e in policy.entries] == [openai.id, f"{anthropic.id}:claude-sonnet-4-5"]

    pinned, _ = store.create_key(name="pinned", routing_policy_id=policy.id)
    plain, _ = store.create_key(name="plain")
    providers = store.bundle(pinned.id)["providers"]
    assert [(p["id"], p["model"]) for p in providers] == [
        (openai.id, None),
        (anthropic.id, "claude-sonnet-4-5"),
    ]
    assert providers[1]["api_key"] == "sk-ant-000000000002"
    # Without a policy: priority order.
    assert [p.id for p, _ in store.provider_chain(plain)] == [anthropic.id, openai.id]
    # The organization's default policy applies to keys without one, filtered by visibility.
    default = store.create_routing_policy(
        name="default", providers=[team_only.id, openai.id], is_default=True
    )
    assert [(p.id, m) for p, m in store.provider_chain(plain)] == [(openai.id, None)]
    team_key, _ = store.create_key(name="team", scope=f"team:{team.id}")
    assert [p.id for p, _ in store.provider_chain(team_key)] == [team_only.id, openai.id]
    assert [p.id for p, _ in store.provider_chain(pinned)] == [openai.id, anthropic.id]
    # One default per organization.
    other = store.create_routing_policy(name="other", providers=openai.id, is_default=True)
    assert not store.get_routing_policy(default.id).is_default
    assert store.default_routing_policy("org_default") == store.get_routing_policy(other.id)
    # A key cannot point at a policy listing providers it cannot see.
    with pytest.raises(ValidationError, match="cannot see"):
        store.create_key(name="x", routing_policy_id=default.id)
    # Deleting what is in use is refused, naming the user.
    with pytest.raises(Conflict, match=pinned.id):
        store.delete_routing_policy(policy.id)
    with pytest.raises(Conflict, match=policy.id):
        store.delete_provider(anthropic.id)
    store.update_key(pinned.id, routing_policy_id=None)
    store.delete_routing_policy(policy.id)
    store.delete_provider(anthropic.id)
    assert "policy_changed" in [k for k, _, _ in kinds(store)]
    with pytest.raises(ValidationError, match="no model provider"):
        store.create_routing_policy(name="bad", providers="mp_nope")


def test_routing_policy_strategy_and_weights(store: Store) -> None:
    a = store.create_provider(type="openai", name="a", api_key="sk-a-00000000000001")
    b = store.create_provider(type="anthropic", name="b", api_key="sk-ant-0000000000002")
    # Weights imply the weighted strategy; a weight 0 entry is a fallback only.
    policy = store.create_routing_policy(name="split", providers=f"{a.id}:3,{b.id}:0")
    assert policy.strategy == "weighted"
    assert [(e.provider_id, e.model, e.weight) for e in policy.entries] == [
        (a.id, None, 3),
        (b.id, None, 0),
    ]
    key, _ = store.create_key(name="k", routing_policy_id=policy.id)
    bundle = store.bundle(key.id)
    assert bundle["routing_strategy"] == "weighted"
    assert [p["weight"] for p in bundle["providers"]] == [3, 0]
    # Under weighted, ID:model:N pins a model and weighs it; otherwise a trailing ':0' is part
    # of the model id (Bedrock's are).
    bedrock_model = "anthropic.claude-3-5-sonnet-20241022-v2:0"
    store.update_routing_policy(policy.id, providers=f"{a.id}:1,{b.id}:{bedrock_model}:2")
    got = store.get_routing_policy(policy.id)
    assert [(e.model, e.weight) for e in got.entries] == [(None, 1), (bedrock_model, 2)]
    ordered = store.create_routing_policy(
        name="fixed", providers=f"{b.id}:{bedrock_model}", strategy="ordered"
    )
    assert [(e.model, e.weight) for e in ordered.entries] == [(bedrock_model, 1)]
    # The strategy alone can change; the revision moves so gateways refetch.
    latency = store.update_routing_policy(policy.id, strategy="least-latency")
    assert latency.strategy == "least-latency" and latency.revision > got.revision
    assert store.bundle(key.id)["routing_strategy"] == "least-latency"
    # Mistakes say what to write.
    with pytest.raises(ValidationError, match="weighted strategy only"):
        store.create_routing_policy(name="x", providers=f"{a.id}:3", strategy="least-busy")
    with pytest.raises(ValidationError, match="positive weight"):
        store.create_routing_policy(name="y", providers=f"{a.id}:0,{b.id}:0")
    with pytest.raises(ValidationError, match="least-latency"):
        store.create_routing_policy(name="z", providers=a.id, strategy="fastest")
    with pytest.raises(ValidationError, match="whole number"):
        store.create_routing_policy(name="w", providers=[{"provider_id": a.id, "weight": -1}])


def test_change_events_follow_writes(store: Store) -> None:
    key, _ = store.create_key(name="k")
    provider = store.create_provider(type="openai", name="p")
    start = store.max_change_id()
    store.update_key(key.id, config={"tags": ["x"]})
    store.rotate_key(key.id)
    store.update_provider(provider.id, rpm=10)
    store.create_routing_policy(name="rp", providers=provider.id)
    budget = store.create_budget(scope="project", window="day", limit_usd=parse_usd("1"))
    store.reset_budget(budget.id)
    store.revoke_key(key.id)
    store.delete_key(key.id)
    assert kinds(store, start) == [
        ("vk_updated", key.id, None),
        ("vk_rotated", key.id, None),
        ("provider_updated", None, provider.id),
        ("policy_changed", None, None),
        ("budget_changed", None, None),
        ("budget_changed", None, None),
        ("vk_revoked", key.id, None),
        ("vk_deleted", key.id, None),
    ]
    ids = [e.id for e in store.changes_since(start)]
    assert ids == sorted(ids) and ids[0] > start
    assert store.changes_since(ids[-1]) == []
    assert [e.id for e in store.changes_since(ids[3], limit=2)] == ids[4:6]


# --- budgets ----------------------------------------------------------------------------------


def test_budgets(store: Store) -> None:
    key, _ = store.create_key(name="k")
    budget = store.create_budget(scope="project", window="month", limit_usd=parse_usd("12.50"))
    assert budget.id.startswith("bud_") and budget.limit_usd == 12_500_000
    assert budget.to_json()["limit_usd"] == "12.50" and budget.scope_id == "proj_default"
    vk_budget = store.create_budget(
        scope=f"virtual_key:{key.id}", window="total", limit_usd=1, on_breach="warn"
    )
    assert (vk_budget.scope_type, vk_budget.scope_id) == ("virtual_key", key.id)
    with pytest.raises(ValidationError, match="needs an id"):
        store.create_budget(scope="end_user", window="day", limit_usd=1)
    with pytest.raises(ValidationError, match="window"):
        store.create_budget(scope="project", window="fortnight", limit_usd=1)
    assert not store.ledger_has_rows() and store.budget_spend(budget) == 0
    # Spend comes from the ledger (filled by the budgets plugin).
    ts = format_time(now())
    with store.db.transaction() as tx:
        for rid, cost in (("r1", 1_000_000), ("r2", 250_000)):
            tx.execute(
                "INSERT INTO ledger (request_id, created_at, organization_id, project_id, vk_id, "
                "cost_usd) VALUES (?,?,?,?,?,?)",
                (rid, ts, "org_default", "proj_default", key.id, cost),
            )
    assert store.ledger_has_rows()
    assert store.budget_spend(budget) == 1_250_000
    assert store.budget_spend(vk_budget) == 1_250_000
    updated = store.update_budget(budget.id, limit_usd=parse_usd("20"), on_breach="warn")
    assert (updated.limit_usd, updated.on_breach) == (20_000_000, "warn")
    reset = store.reset_budget(budget.id)
    assert reset.reset_at and store.budget_spend(reset) == 0
    store.delete_budget(budget.id)
    with pytest.raises(NotFound):
        store.get_budget(budget.id)


def _ledger_entry(rid: str, cost: int, **over: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "request_id": rid,
        "created_at": format_time(now()),
        "organization_id": "org_default",
        "team_id": "team_default",
        "project_id": "proj_default",
        "vk_id": "vk_x",
        "principal_id": None,
        "end_user_id": None,
        "provider_id": "mp_x",
        "model": "gpt-4o",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_micro_usd": cost,
        "status": 200,
    }
    entry.update(over)
    return entry


def test_ledger_batch_counts_new_rows_once(store: Store) -> None:
    """One batch (one statement for all its rows) counts each new request_id once, also when
    the batch repeats an entry, and an empty batch records nothing."""
    a, b = (check_ledger_entry(_ledger_entry(rid, 10)) for rid in ("dup-a", "dup-b"))
    assert store.record_ledger([a, b, a]) == 2
    assert store.record_ledger([b, a]) == 0
    assert store.record_ledger([]) == 0
    budget = store.create_budget(scope="project", window="day", limit_usd=parse_usd("1"))
    assert store.budget_spend(budget) == 20


def test_ledger_is_idempotent_and_sums_per_window(store: Store) -> None:
    rows = [check_ledger_entry(_ledger_entry(f"r{i}", 100 + i)) for i in range(5)]
    assert store.record_ledger(rows) == 5
    # A retried (or overlapping) batch debits nothing twice.
    again = [*rows[3:], check_ledger_entry(_ledger_entry("r5", 1000))]
    assert store.record_ledger(again) == 1
    total = sum(100 + i for i in range(5)) + 1000
    budget = store.create_budget(scope="project", window="day", limit_usd=parse_usd("1"))
    assert store.budget_spend(budget) == total
    # Last month's spend is not this month's; the query's `since` decides.
    old = format_time(now() - timedelta(days=40))
    store.record_ledger([check_ledger_entry(_ledger_entry("r-old", 7, created_at=old))])
    month = store.create_budget(scope="project", window="month", limit_usd=1)
    assert store.budget_spend(month) == total
    everything = store.create_budget(scope="project", window="total", limit_usd=1)
    assert store.budget_spend(everything) == total + 7
    q = {"organization_id": "org_default", "scope_type": "project", "scope_id": "proj_default"}
    first = rows[0]["created_at"]
    spend = store.ledger_spend([{**q, "since": old}, {**q, "since": old, "until": first}])
    assert spend == [total + 7, 7]
    with pytest.raises(ValidationError, match="cost_micro_usd"):
        check_ledger_entry(_ledger_entry("bad", -1))
    with pytest.raises(ValidationError, match="request_id"):
        check_ledger_entry(_ledger_entry("", 1))
    with pytest.raises(ValidationError, match="created_at"):
        check_ledger_entry(_ledger_entry("r", 1, created_at="yesterday"))


def test_principal_and_end_user_budgets(store: Store) -> None:
    acme = store.create_organization("acme")
    key, _ = store.create_key(name="k", scope="project", principal_id="alice")
    other, _ = store.create_key(name="k2")
    # principal and end-user ids are free-form: they count only inside their organization.
    entries = [
        _ledger_entry("a1", 300, principal_id="alice", end_user_id="u1", vk_id=key.id),
        _ledger_entry("a2", 200, principal_id="alice", end_user_id="u2", vk_id=key.id),
        _ledger_entry("a3", 50, principal_id="alice", end_user_id="u1", organization_id=acme.id),
    ]
    store.record_ledger([check_ledger_entry(e) for e in entries])
    alice = store.create_budget(scope="principal:alice", window="day", limit_usd=1)
    assert store.budget_spend(alice) == 500
    alice_acme = store.create_budget(
        scope="principal:alice", window="day", limit_usd=1, organization_id=acme.id
    )
    assert alice_acme.organization_id == acme.id and store.budget_spend(alice_acme) == 50
    u1 = store.create_budget(scope="end_user:u1", window="day", limit_usd=1)
    assert store.budget_spend(u1) == 300
    each = store.create_budget(scope="end_user:*", window="day", limit_usd=1)
    assert store.budget_spend(each) == 300 and store.budget_top_end_user(each) == "u1"
    with pytest.raises(ValidationError, match="organization"):
        store.create_budget(scope="project", window="day", limit_usd=1, organization_id=acme.id)
    with pytest.raises(ValidationError, match="organization"):
        store.create_budget(scope="end_user:*", window="day", limit_usd=1, organization_id="nope")
    # A key's bundle lists the budgets that apply to it: its scopes, its principal, and every
    # end-user budget of its organization (applied per request by the request's end user).
    project = store.create_budget(scope="project", window="month", limit_usd=1)
    mine = store.create_budget(scope=f"virtual_key:{key.id}", window="total", limit_usd=1)
    store.create_budget(scope=f"virtual_key:{other.id}", window="total", limit_usd=1)
    bundled = store.bundle(key.id)["budgets"]
    assert [b["id"] for b in bundled] == [alice.id, u1.id, each.id, project.id, mine.id]
    assert bundled[-1] == {
        "id": mine.id,
        "name": None,
        "scope_type": "virtual_key",
        "scope_id": key.id,
        "window": "total",
        "limit_micro_usd": 1,
        "on_breach": "block",
        "reset_at": None,
    }
    assert alice.id not in [b["id"] for b in store.bundle(other.id)["budgets"]]


def test_provider_prices_are_validated(store: Store) -> None:
    prices = {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": "10"}}
    provider = store.create_provider(type="openai", name="priced", config={"prices": prices})
    assert provider.config["prices"] == prices
    assert check_prices({"m": {"input_per_mtok": 1, "cache_read_per_mtok": 0}}) == []
    problems = check_prices({"m": {"input_per_mtok": -1, "output": 3}, "n": 4})
    assert problems == [
        "config.prices.m.input_per_mtok: -1 must be a non-negative number",
        "config.prices.m.output: unknown field (known: input_per_mtok, output_per_mtok, "
        "cache_read_per_mtok, cache_write_per_mtok)",
        "config.prices.n: must be an object with input_per_mtok, output_per_mtok, "
        "cache_read_per_mtok, cache_write_per_mtok",
    ]
    with pytest.raises(ValidationError, match="input_per_mtok"):
        store.update_provider(provider.id, config={"prices": {"gpt-4o": {"input_per_mtok": "x"}}})


def test_usd_and_windows() -> None:
    assert parse_usd("12.50") == 12_500_000 and parse_usd("$3") == 3_000_000
    assert parse_usd(0.000001) == 1
    for bad in ("-1", "abc", "0.0000001", "nan"):
        with pytest.raises(ValidationError):
            parse_usd(bad)
    from datetime import UTC, datetime

    at = datetime(2026, 1, 29, 15, 42, 7, tzinfo=UTC)  # a Thursday
    assert window_start("hour", at) == datetime(2026, 1, 29, 15, tzinfo=UTC)
    assert window_start("day", at) == datetime(2026, 1, 29, tzinfo=UTC)
    assert window_start("week", at) == datetime(2026, 1, 26, tzinfo=UTC)
    assert window_start("month", at) == datetime(2026, 1, 1, tzinfo=UTC)
    assert window_start("total", at) is None


# --- concurrency ------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from tollway_control_plane.store import Store
    store = Store.open(sys.argv[1], b"pepper")
    sys.stdin.readline()  # start together
    for i in range(25):
        key, secret = store.create_key(name=f"{sys.argv[2]}-{i}")
        store.update_key(key.id, config={"tags": [sys.argv[2]]})
        print(secret, flush=True)
    store.close()
    """
)


def test_concurrent_writers_on_sqlite(tmp_path: Path) -> None:
    """Two processes creating keys at once (on a fresh file): nothing lost, nothing corrupt."""
    db = str(tmp_path / "tollway.db")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, db, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = []
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outputs.append(out.split())
    store = Store.open(db, b"pepper")
    try:
        assert store.db.query("PRAGMA integrity_check") == [{"integrity_check": "ok"}]
        keys = store.list_keys()
        assert len(keys) == 50
        assert sorted(k.config["tags"][0] for k in keys) == ["a"] * 25 + ["b"] * 25
        for secret in outputs[0] + outputs[1]:
            store.resolve_secret(secret)
        events = store.changes_since(0, limit=1000)
        assert [e.id for e in events] == list(range(1, 101))
    finally:
        store.close()


def test_postgresql_reconnects_after_a_dropped_connection(pg_url: str) -> None:  # noqa: F811
    import psycopg

    store = Store.open(pg_url, PEPPER)
    try:
        key, secret = store.create_key(name="k")
        pid = store.db.conn().info.backend_pid
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert store.resolve_secret(secret).id == key.id  # a read retries on a new connection
        assert store.db.conn().info.backend_pid != pid
        store.disable_key(key.id)  # and writes use it
    finally:
        store.close()


@given(st.integers(min_value=0, max_value=10**15))
def test_usd_round_trip(micros: int) -> None:
    assert parse_usd(format_usd(micros)) == micros
