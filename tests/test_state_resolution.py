"""Issue 17 (items 1 and 7): the CLI and the gateway find the same store, and say which.

A new user's flow from an empty directory: a ``tollway.toml`` with ``data_dir`` and two
providers (the simulator), ``tollway serve --config tollway.toml`` as a real process, a key made
with ``tollway virtual-keys create --config tollway.toml``, the OpenAI and Anthropic SDKs
calling the gateway with it. ``tollway status`` compares the CLI's store with the gateway's;
read-only commands elsewhere create nothing; scopes resolve by name and slug; ``vk`` works.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import Simulator

from tollway.testing import GatewayProcess, free_port, stop, wait_ready

pytest.importorskip("tollway_control_plane")
pytest.importorskip("tollway_vk_auth")

HELLO = [{"role": "user", "content": "hi"}]
_UNSET = (
    "TOLLWAY_CONFIG",
    "TOLLWAY_DATA_DIR",
    "TOLLWAY_DATABASE_URL",
    "TOLLWAY_ADMIN_URL",
    "TOLLWAY_ADMIN_TOKEN",
    "LW_GATEWAY_BASE_URL",
    "TOLLWAY_PLUGINS",
    "SERVER_ADDR",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update({"SERVER_DRAIN_DELAY_SECONDS": "0", "LOG_FORMAT": "json", **extra})
    return env


def tollway(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``tollway ARGS`` as a subprocess in ``cwd`` (stdout, stderr, returncode)."""
    return subprocess.run(
        [sys.executable, "-m", "tollway", *args],
        cwd=cwd,
        env=dict(env if env is not None else clean_env()),
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok_json(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> Any:
    out = tollway(cwd, *args, "--json", env=env)
    assert out.returncode == 0, f"tollway {' '.join(args)} failed: {out.stderr}"
    return json.loads(out.stdout)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def project(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """An empty folder with only tollway.toml, and `tollway serve --config tollway.toml`
    running from it; yields (folder, gateway URL)."""
    tmp_path = tmp_path_factory.mktemp("state")
    folder = tmp_path / "proj"
    folder.mkdir()
    port = free_port()
    (folder / "tollway.toml").write_text(
        f"""data_dir = "state"
environment = "local"

[server]
addr = "127.0.0.1:{port}"

[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{sim.url}/v1"
api_key = "sk-sim-openai"

[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{sim.url}"
api_key = "sk-ant-sim"
"""
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "--config", "tollway.toml"],
            cwd=folder,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(GatewayProcess(proc, url, [], log, folder / "tollway.toml", folder / "state"))
        yield folder, url
    finally:
        stop(proc)
    text = log.read_text()
    assert f"using store sqlite:///{folder / 'state' / 'tollway.db'}" in text


@pytest.fixture(scope="module")
def made(project: tuple[Path, str]) -> dict[str, Any]:
    """Two keys made by the CLI given the same --config as the gateway (`vk` for the second)."""
    folder, _ = project
    first = tollway(folder, "virtual-keys", "create", "--name", "app", "--config", "tollway.toml")
    assert first.returncode == 0, first.stderr
    key = ok_json(folder, "vk", "create", "--name", "app2", "--config", "tollway.toml")
    return {"stderr": first.stderr, "key": key}


def test_issue_flow_cli_and_gateway_share_the_store(
    project: tuple[Path, str], made: dict[str, Any]
) -> None:
    folder, url = project
    store_file = folder / "state" / "tollway.db"

    # The key, made by the CLI given the same --config: the gateway's store.
    assert (
        f"using store sqlite:///{store_file} (data dir from tollway.toml data_dir)"
        in (made["stderr"])
    )
    secret = made["key"]["secret"]

    chat = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=20)
    reply = chat.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    claude = anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0, timeout=20)
    answer = claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=HELLO,  # type: ignore[arg-type]
    )
    assert answer.content

    # tollway status: the same store on both sides.
    status = ok_json(folder, "status", "--config", "tollway.toml")
    assert status["same_store"] is True
    assert status["cli"]["data_dir"] == str(folder / "state")
    assert status["cli"]["data_dir_from"] == "tollway.toml data_dir"
    store_id = status["cli"]["store"]["id"]
    assert store_id.startswith("store_")
    assert status["gateway"]["state"]["store"] == {"kind": "sqlite", "id": store_id}
    readyz = httpx.get(f"{url}/readyz", timeout=5).json()
    assert readyz["state"]["store"]["id"] == store_id
    assert str(folder) not in json.dumps(readyz)  # no paths on /readyz


def test_elsewhere_read_only_commands_create_nothing_and_status_says_mismatch(
    project: tuple[Path, str], made: dict[str, Any], tmp_path: Path
) -> None:
    folder, url = project
    key = made["key"]
    store_id = ok_json(folder, "status", "--config", "tollway.toml")["cli"]["store"]["id"]
    # From another, empty directory without --config: nothing is created, and it says so.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (("virtual-keys", "list"), ("vk", "list", "--json"), ("vk", "get", key["id"])):
        out = tollway(elsewhere, *args)
        assert out.returncode == 1, out
        assert f"no store at sqlite:///{elsewhere / '.tollway' / 'tollway.db'}" in out.stderr
        assert "--config" in out.stderr
    for args in (("model-providers", "list"), ("gateway-budgets", "list"), ("scopes", "list")):
        assert tollway(elsewhere, *args).returncode == 1
    shown = tollway(elsewhere, "config", "show")
    assert shown.returncode == 0, shown.stderr
    mismatch = tollway(elsewhere, "status", "--gateway", url)
    assert mismatch.returncode == 1, mismatch.stdout + mismatch.stderr
    assert "MISMATCH" in mismatch.stdout and store_id in mismatch.stdout
    as_json = tollway(elsewhere, "status", "--gateway", url, "--json")
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["same_store"] is False and data["cli"]["store"]["exists"] is False
    assert files_under(elsewhere) == []


def test_every_way_of_naming_the_store_finds_it(
    project: tuple[Path, str], made: dict[str, Any], tmp_path: Path
) -> None:
    folder, url = project
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The same store found from elsewhere by each way of naming it.
    config = str(folder / "tollway.toml")
    ways: list[tuple[tuple[str, ...], dict[str, str]]] = [
        (("vk", "list", "--config", config), {}),
        (("--config", config, "vk", "list"), {}),
        (("vk", "--config", config, "list"), {}),
        (("vk", "list", "--data-dir", str(folder / "state")), {}),
        (("--data-dir", os.path.relpath(folder / "state", elsewhere), "virtual-keys", "list"), {}),
        (("vk", "list"), {"TOLLWAY_CONFIG": config}),
        (("vk", "list"), {"TOLLWAY_DATA_DIR": str(folder / "state")}),
    ]
    for args, extra in ways:
        listed = ok_json(elsewhere, *args, env=clean_env(**extra))
        assert {k["name"] for k in listed} == {"app", "app2"}, (args, extra)
    for extra in ({"TOLLWAY_CONFIG": config}, {"TOLLWAY_DATA_DIR": str(folder / "state")}):
        same = ok_json(elsewhere, "status", "--gateway", url, env=clean_env(**extra))
        assert same["same_store"] is True, extra
    assert files_under(elsewhere) == []


def test_unknown_key_hint_names_tollway_status(project: tuple[Path, str], tmp_path: Path) -> None:
    _, url = project
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A key made in another store: the gateway's 401 points at `tollway status`.
    stray = ok_json(elsewhere, "vk", "create", "--name", "stray", "--data-dir", "other")
    assert (elsewhere / "other" / "tollway.db").is_file()
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(
            base_url=f"{url}/v1", api_key=stray["secret"], max_retries=0
        ).chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
    error = info.value.response.json()["error"]
    assert error["code"] == "unknown_key" and "tollway status" in error["message"]


def test_scopes_resolve_by_name_slug_and_default(tmp_path: Path) -> None:
    env = clean_env(TOLLWAY_DATA_DIR=str(tmp_path / "data"))

    def run(*args: str) -> Any:
        return ok_json(tmp_path, *args, env=env)

    acme = run("scopes", "create", "--type", "organization", "--name", "Acme Corp")
    other = run("scopes", "create", "--type", "organization", "--name", "Other")
    backend = run(
        "scopes", "create", "--type", "team", "--name", "Backend", "--parent", "acme-corp"
    )
    assert backend["organization_id"] == acme["id"]
    other_backend = run(
        "scopes", "create", "--type", "team", "--name", "backend", "--parent", "OTHER"
    )
    assert other_backend["organization_id"] == other["id"]
    chat = run(
        "scopes", "create", "--type", "project", "--name", "Chat Bot", "--parent", backend["id"]
    )

    cases = {
        "ORG:acme": None,  # neither a name nor a slug: refused below
        "ORG:acme-corp": f"organization:{acme['id']}",
        "org:Acme Corp": f"organization:{acme['id']}",
        "organization:default": "organization:org_default",
        "Organization:DEFAULT": "organization:org_default",
        "team:default": "team:team_default",
        f"TEAM:{backend['id']}": f"team:{backend['id']}",
        "project:chat-bot": f"project:{chat['id']}",
        "project:CHAT BOT": f"project:{chat['id']}",
    }
    for scope, expected in cases.items():
        if expected is None:
            continue
        key = run("vk", "create", "--name", f"k {scope}", "--scope", scope)
        assert key["scope"] == expected, scope

    unknown = tollway(tmp_path, "vk", "create", "--name", "x", "--scope", "ORG:acme", env=env)
    assert unknown.returncode == 1
    assert "no organization 'acme'" in unknown.stderr and acme["id"] in unknown.stderr
    ambiguous = tollway(tmp_path, "vk", "create", "--name", "x", "--scope", "team:backend", env=env)
    assert ambiguous.returncode == 1
    assert "ambiguous" in ambiguous.stderr
    assert backend["id"] in ambiguous.stderr and other_backend["id"] in ambiguous.stderr

    provider = run(
        "model-providers",
        "create",
        "--type",
        "openai",
        "--name",
        "p",
        "--api-key",
        "sk-x",
        "--scope",
        "project:chat-bot",
    )
    assert provider["scope"] == f"project:{chat['id']}"
    budget = run("gateway-budgets", "create", "--scope", "TEAM:" + backend["id"], "--limit", "5")
    assert budget["scope"] == f"team:{backend['id']}"

    # vk is virtual-keys, and --help shows the alias.
    listed = run("vk", "list")
    assert len(listed) == len([c for c in cases.values() if c])
    assert run("vk", "get", listed[0]["id"])["id"] == listed[0]["id"]
    helped = tollway(tmp_path, "--help", env=env)
    assert "vk" in helped.stdout and "virtual-keys" in helped.stdout


def test_admin_token_alone_keeps_the_local_store_and_turns_on_the_admin_api(
    tmp_path: Path,
) -> None:
    """``TOLLWAY_ADMIN_TOKEN`` without ``TOLLWAY_ADMIN_URL`` is not the CLI's remote mode:
    ``tollway serve`` uses its own store (and says so) with the admin API on, and a command in
    the same shell works on that same store."""
    token = "state-resolution-admin-token-0123456789"
    port = free_port()
    (tmp_path / "tollway.toml").write_text(
        f'data_dir = "state"\nenvironment = "local"\n\n[server]\naddr = "127.0.0.1:{port}"\n'
    )
    env = clean_env(
        TOLLWAY_ADMIN_TOKEN=token,
        TOLLWAY_CONFIG=str(tmp_path / "tollway.toml"),
        TOLLWAY_PLUGINS="tollway-control-plane",
    )
    store_file = tmp_path / "state" / "tollway.db"
    made = tollway(tmp_path, "vk", "create", "--name", "before-serve", "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert f"using store sqlite:///{store_file}" in made.stderr
    log = tmp_path / "gateway.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"],
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        gw = GatewayProcess(proc, url, [], log, tmp_path / "tollway.toml", tmp_path / "state")
        wait_ready(gw)
        listed = httpx.get(
            f"{url}/api/admin/virtual-keys",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert listed.status_code == 200, listed.text
        assert [k["name"] for k in listed.json()] == ["before-serve"]
        status = ok_json(tmp_path, "status", "--gateway", url, env=env)
        assert status["cli"]["store"]["kind"] != "remote"
        assert status["same_store"] is True
    finally:
        stop(proc)
    text = log.read_text()
    assert f"using store sqlite:///{store_file}" in text
    assert "TOLLWAY_ADMIN_URL unset" not in text and "using control plane" not in text
