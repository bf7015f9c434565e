"""The CLI: ``tollway virtual-keys``, ``model-providers``, ``routing-policies``,
``gateway-budgets``, ``scopes`` — as subprocesses for the main flows, in-process (click's
runner, same command objects) for the rest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner, Result
from control_plane_helpers import SECRETS_ENV, cli_env, pg_url, tollway, tollway_json  # noqa: F401

from tollway.keys import check_key_format
from tollway_control_plane.cli import add_commands


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


# --- subprocesses -----------------------------------------------------------------------------


def test_key_lifecycle(data_dir: Path) -> None:
    created = tollway_json(
        data_dir,
        "virtual-keys",
        "create",
        "--name",
        "backend",
        "--scope",
        "project",
        "--env",
        "test",
        "--config-json",
        '{"models_allowed": ["gpt-4o*"], "rate_limits": {"rpm": 5, "tpm": 1000}}',
    )
    assert {"id", "secret", "display_prefix", "name", "status", "config"} <= set(created)
    secret = created["secret"]
    assert check_key_format(secret) == secret and secret.startswith("lw_vk_test_")
    assert created["display_prefix"] == secret[:18] and created["scope"] == "project:proj_default"

    # The secret is never printed again: not by get or list, human or JSON (the in-process
    # tests below cover the other combinations).
    for args in (("get", created["id"]), ("list", "--json")):
        out = tollway(data_dir, "virtual-keys", *args).stdout
        assert created["id"] in out and secret[:18] in out
        assert secret not in out and secret[18:] not in out

    updated = tollway_json(
        data_dir,
        "virtual-keys",
        "update",
        created["id"],
        "--config-json",
        '{"rate_limits": {"tpm": null}, "tags": ["ml"]}',
    )
    assert updated["config"] == {
        "models_allowed": ["gpt-4o*"],
        "rate_limits": {"rpm": 5},
        "tags": ["ml"],
    }
    assert updated["revision"] == 2 and "secret" not in updated

    rotated = tollway_json(data_dir, "virtual-keys", "rotate", created["id"])
    assert rotated["secret"] != secret and rotated["previous_valid_until"]
    check_key_format(rotated["secret"])

    refused = tollway(data_dir, "virtual-keys", "revoke", created["id"], check=False)
    assert refused.returncode == 0 and "revoked" in refused.stdout


def test_create_prints_the_secret_once(data_dir: Path) -> None:
    out = tollway(data_dir, "virtual-keys", "create", "--name", "human").stdout
    secrets = [w for w in out.split() if w.startswith("lw_vk_live_") and len(w) == 40]
    assert len(secrets) == 1
    check_key_format(secrets[0])
    assert "shown only once" in out


def test_errors_are_readable(data_dir: Path) -> None:
    proc = tollway(
        data_dir,
        "virtual-keys",
        "create",
        "--name",
        "x",
        "--config-json",
        '{"policy_rules": {"tools": {"deny": ["ok", "(?<=x)"]}}, "rate_limits": {"rpm": 0}}',
        check=False,
    )
    assert proc.returncode == 1
    assert "rate_limits.rpm: must be an integer >= 1" in proc.stderr
    assert "policy_rules.tools.deny[1]: pattern '(?<=x)' is not valid RE2" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = tollway(data_dir, "virtual-keys", "get", "vk_nope", check=False)
    assert proc.returncode == 1 and "no virtual key 'vk_nope'" in proc.stderr


def test_postgresql_store(data_dir: Path, pg_url: str) -> None:  # noqa: F811
    env = cli_env(data_dir, TOLLWAY_DATABASE_URL=pg_url)
    created = tollway_json(data_dir, "virtual-keys", "create", "--name", "pg", env=env)
    listed = tollway_json(data_dir, "virtual-keys", "list", env=env)
    assert [k["id"] for k in listed] == [created["id"]]
    assert not (data_dir / "tollway.db").exists()
    # A shared store needs the secrets from the environment (never generated locally).
    bare = {k: v for k, v in env.items() if k not in SECRETS_ENV}
    proc = tollway(data_dir, "virtual-keys", "list", env=bare, check=False)
    assert proc.returncode == 1 and "LW_VIRTUAL_KEY_PEPPER" in proc.stderr


def test_embedded_secrets_are_generated_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in cli_env(data_dir).items() if k not in SECRETS_ENV}
    first = tollway_json(data_dir, "virtual-keys", "create", "--name", "a", env=env)
    secrets_file = data_dir / "gateway-secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert (data_dir / "tollway.db").stat().st_mode & 0o777 == 0o600
    listed = tollway_json(data_dir, "virtual-keys", "list", env=env)
    assert [k["id"] for k in listed] == [first["id"]]


# --- in-process (same click commands) ---------------------------------------------------------


@pytest.fixture
def group() -> click.Group:
    cli = click.Group("tollway", context_settings={"help_option_names": ["-h", "--help"]})
    add_commands(cli)
    return cli


@pytest.fixture
def run(group: click.Group, data_dir: Path) -> Iterator[Any]:
    runner = CliRunner()
    env = cli_env(data_dir)
    env.setdefault("TOLLWAY_ADMIN_URL", "")
    env.setdefault("TOLLWAY_ADMIN_TOKEN", "")
    env.setdefault("TOLLWAY_DATABASE_URL", "")

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(group, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    yield invoke


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


def test_help_on_every_command(group: click.Group, run: Any) -> None:
    paths = list(_walk(group))[1:]
    # 8 groups/commands + 36 sub-commands (requests get/list/tail; api-tokens create/list/get/
    # revoke)
    assert len(paths) == 44
    for path in paths:
        out = run(*path, "--help").output
        assert out.startswith(f"Usage: tollway {' '.join(path)}"), out
        assert "--help" in out


def test_json_everywhere(group: click.Group) -> None:
    for path in _walk(group):
        cmd: click.Command = group
        for name in path:
            assert isinstance(cmd, click.Group)
            cmd = cmd.commands[name]
        if isinstance(cmd, click.Group) or path == ("control-plane",):
            continue
        assert any(p.name == "as_json" for p in cmd.params), f"{path} has no --json"


def j(result: Result) -> Any:
    return orjson.loads(result.stdout)


def test_providers_policies_budgets(run: Any) -> None:
    openai = j(
        run(
            "model-providers", "create", "--type", "openai", "--name", "openai-prod",
            "--api-key", "sk-proj-cli-secret-abcd", "--base-url", "http://127.0.0.1:9/v1",
            "--rpm", "100", "--priority", "1", "--models", "gpt-4o*,o3", "--json",
        )
    )  # fmt: skip
    assert openai["api_key"] == "sk-…abcd" and openai["models"] == ["gpt-4o*", "o3"]
    assert (openai["rpm"], openai["priority"], openai["scope"]) == (
        100,
        1,
        "organization:org_default",
    )
    anthropic = j(
        run("model-providers", "create", "--type", "anthropic", "--name", "claude",
            "--api-key", "sk-ant-cli-secret-wxyz",
            "--config-json", '{"anthropic_version": "2023-06-01"}', "--json")
    )  # fmt: skip
    listing = run("model-providers", "list").stdout
    assert "sk-…abcd" in listing and "sk-proj-cli-secret" not in listing
    assert listing.index("claude") < listing.index("openai-prod")  # priority 0 before 1
    updated = j(
        run("model-providers", "update", openai["id"], "--rpm", "0", "--tpm", "5000", "--json")
    )
    assert (updated["rpm"], updated["tpm"], updated["revision"]) == (None, 5000, 2)
    assert "sk-proj-cli-secret" not in run("model-providers", "get", openai["id"]).stdout

    policy = j(
        run("routing-policies", "create", "--name", "failover", "--default",
            "--providers", f"{openai['id']},{anthropic['id']}:claude-sonnet-4-5", "--json")
    )  # fmt: skip
    assert policy["is_default"] and policy["entries"] == [
        {"provider_id": openai["id"], "model": None, "weight": 1},
        {"provider_id": anthropic["id"], "model": "claude-sonnet-4-5", "weight": 1},
    ]
    assert policy["strategy"] == "ordered"
    assert f"{anthropic['id']}:claude-sonnet-4-5" in run("routing-policies", "list").stdout
    # Weights make it weighted; the listing shows them.
    split = j(
        run("routing-policies", "create", "--name", "split",
            "--providers", f"{openai['id']}:3,{anthropic['id']}:1", "--json")
    )  # fmt: skip
    assert split["strategy"] == "weighted"
    assert [e["weight"] for e in split["entries"]] == [3, 1]
    assert f"{openai['id']}:3,{anthropic['id']}:1" in run("routing-policies", "list").stdout
    bad = run(
        "routing-policies", "create", "--name", "bad", "--strategy", "least-busy",
        "--providers", f"{openai['id']}:3", code=1,
    ).output  # fmt: skip
    assert "weighted strategy only" in bad
    run("routing-policies", "delete", split["id"])
    assert j(run("routing-policies", "get", policy["id"], "--json"))["name"] == "failover"
    key = j(
        run("virtual-keys", "create", "--name", "k", "--routing-policy", policy["id"], "--json")
    )
    assert key["routing_policy_id"] == policy["id"]
    out = run("model-providers", "delete", anthropic["id"], code=1).output
    assert policy["id"] in out
    out = run("routing-policies", "delete", policy["id"], code=1).output
    assert key["id"] in out
    run("virtual-keys", "update", key["id"], "--routing-policy", "none")
    renamed = j(
        run(
            "routing-policies",
            "update",
            policy["id"],
            "--name",
            "fo",
            "--providers",
            openai["id"],
            "--json",
        )
    )
    assert renamed["name"] == "fo" and len(renamed["entries"]) == 1
    assert j(run("routing-policies", "delete", policy["id"], "--json")) == {
        "id": policy["id"],
        "deleted": True,
    }
    run("model-providers", "delete", anthropic["id"])

    budget = j(
        run("gateway-budgets", "create", "--scope", "project", "--window", "month",
            "--limit", "100", "--on-breach", "warn", "--json")
    )  # fmt: skip
    assert (budget["scope"], budget["limit_usd"], budget["spend_usd"]) == (
        "project:proj_default",
        "100.00",
        "0.00",
    )
    assert budget["spend_accounting"] is False
    table = run("gateway-budgets", "list").stdout
    assert "$100.00" in table and "spend accounting not installed" in table
    assert "spend accounting not installed" in run("gateway-budgets", "get", budget["id"]).stdout
    assert (
        j(run("gateway-budgets", "update", budget["id"], "--limit", "250.5", "--json"))["limit_usd"]
        == "250.50"
    )
    assert j(run("gateway-budgets", "reset", budget["id"], "--json"))["reset_at"]
    vk_budget = j(
        run(
            "gateway-budgets",
            "create",
            "--scope",
            f"virtual_key:{key['id']}",
            "--limit",
            "1",
            "--json",
        )
    )
    assert vk_budget["scope"] == f"virtual_key:{key['id']}"
    assert (
        "needs an id"
        in run("gateway-budgets", "create", "--scope", "principal", "--limit", "1", code=1).output
    )
    run("gateway-budgets", "delete", budget["id"])
    assert [b["id"] for b in j(run("gateway-budgets", "list", "--json"))] == [vk_budget["id"]]


def test_secret_only_from_create_and_rotate(run: Any) -> None:
    key = j(run("virtual-keys", "create", "--name", "once", "--json"))
    rotated = j(run("virtual-keys", "rotate", key["id"], "--json"))
    human_rotate = run("virtual-keys", "rotate", key["id"]).stdout
    assert "keeps working until" in human_rotate
    for args in (("get", key["id"]), ("get", key["id"], "--json"), ("list",), ("list", "--json")):
        out = run("virtual-keys", *args).stdout
        for secret in (key["secret"], rotated["secret"]):
            assert secret[18:] not in out, args
    assert run("virtual-keys", "revoke", key["id"]).stdout.endswith("status revoked\n")
    assert "revoked" in run("virtual-keys", "enable", key["id"], code=1).output


def test_scopes_and_key_status(run: Any) -> None:
    team = j(run("scopes", "create", "--type", "team", "--name", "ml", "--json"))
    project = j(
        run(
            "scopes",
            "create",
            "--type",
            "project",
            "--name",
            "chat",
            "--parent",
            team["id"],
            "--json",
        )
    )
    scopes = j(run("scopes", "list", "--json"))
    assert [p["id"] for p in scopes["projects"]] == ["proj_default", project["id"]]
    assert "proj_default" in run("scopes", "list").stdout
    key = j(
        run(
            "virtual-keys", "create", "--name", "k", "--scope", f"project:{project['id']}", "--json"
        )
    )
    assert (key["team_id"], key["project_id"]) == (team["id"], project["id"])
    assert j(run("virtual-keys", "disable", key["id"], "--json"))["status"] == "disabled"
    assert "status active" in run("virtual-keys", "enable", key["id"]).stdout
    out = run("virtual-keys", "update", key["id"], "--expires-at", "2001-01-01", "--json").stdout
    assert j_status(out) == "expired"
    assert (
        j_status(run("virtual-keys", "update", key["id"], "--expires-at", "never", "--json").stdout)
        == "active"
    )
    assert j(run("virtual-keys", "delete", key["id"], "--json")) == {
        "id": key["id"],
        "deleted": True,
    }
    assert "no virtual keys yet" in run("virtual-keys", "list").stdout


def j_status(text: str) -> str:
    return str(orjson.loads(text)["status"])


def test_usage_errors(run: Any, tmp_path: Path) -> None:
    out = run("virtual-keys", "create", "--name", "x", "--config-json", "{not json", code=2).output
    assert "--config-json" in out and "not valid JSON" in out
    (tmp_path / "cfg.json").write_text('{"tags": ["from-file"]}')
    key = j(
        run(
            "virtual-keys",
            "create",
            "--name",
            "f",
            "--config-json",
            f"@{tmp_path / 'cfg.json'}",
            "--json",
        )
    )
    assert key["config"] == {"tags": ["from-file"]}
    assert "nothing to change" in run("virtual-keys", "update", key["id"], code=2).output
    out = run("virtual-keys", "create", "--name", "x", "--scope", "galaxy:1", code=1).output
    assert "is not a scope" in out
    out = run("model-providers", "create", "--type", "custom", "--name", "c", code=1).output
    assert "base_url" in out


def test_remote_mode_needs_both_variables(group: click.Group, data_dir: Path) -> None:
    env = cli_env(data_dir, TOLLWAY_ADMIN_URL="http://127.0.0.1:9", TOLLWAY_ADMIN_TOKEN="")
    result = CliRunner().invoke(group, ["virtual-keys", "list"], env=env)
    assert result.exit_code == 1 and "TOLLWAY_ADMIN_TOKEN is not set" in result.output
