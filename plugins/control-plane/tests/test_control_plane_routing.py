"""Config-file and store providers together, end to end (real processes).

A standalone ``tollway control-plane`` whose store has an OpenAI provider, and a gateway
(``LW_GATEWAY_BASE_URL``, every installed plugin) whose config file has an Anthropic provider;
both point at one simulator. The precedence under test (docs/operator-guide.md, "Config-file
and store providers"):

* a control-plane key without a routing policy reaches its store chain, then the config file's
  providers — a gpt model and a claude model both work, and ``GET /v1/models`` lists both;
* a key with a routing policy reaches exactly the policy's chain;
* a static key reaches the config file's providers, as before;
* ``model-providers list`` (CLI and admin API) shows the config-file entry, read-only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from control_plane_helpers import (
    SECRETS_ENV,
    ControlPlaneProcess,
    cli_env,
    start_control_plane,
    tollway,
    tollway_json,
)

from tollway.testing import Simulator, StaticKey, free_port, start_simulator, stop, toml_value

pytestmark = pytest.mark.slow  # subprocesses: simulator, control plane, gateway, CLI

ADMIN_TOKEN = "routing-admin-token-0123456789"
HI = [{"role": "user", "content": "hi"}]


class Setup:
    def __init__(
        self,
        gw_url: str,
        cp: ControlPlaneProcess,
        env: dict[str, str],
        keys: dict[str, str],
        static: str,
        store_openai: str,
    ) -> None:
        self.gw_url, self.cp, self.env, self.keys = gw_url, cp, env, keys
        self.static, self.store_openai = static, store_openai

    def openai(self, key: str) -> openai.OpenAI:
        secret = self.keys.get(key, key)
        return openai.OpenAI(
            base_url=f"{self.gw_url}/v1", api_key=secret, max_retries=0, timeout=20
        )

    def anthropic(self, key: str) -> anthropic.Anthropic:
        secret = self.keys.get(key, key)
        return anthropic.Anthropic(base_url=self.gw_url, api_key=secret, max_retries=0, timeout=20)


def _key(env: dict[str, str], data_dir: Path, name: str, *args: str) -> str:
    doc = tollway_json(data_dir, "virtual-keys", "create", "--name", name, *args, env=env)
    return str(doc["secret"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("routing")
    sim: Simulator = start_simulator()
    static = StaticKey(name="static")
    config = tmp / "tollway.toml"
    config.write_text(
        "\n".join(
            [
                "[[providers]]",
                'name = "cfg-anthropic"',
                'type = "anthropic"',
                f"base_url = {toml_value(sim.url)}",
                'api_key = "sk-ant-config-file"',
                "[[plugin.static-keys.keys]]",
                f"name = {toml_value(static.name)}",
                f"secret = {toml_value(static.secret)}",
            ]
        )
        + "\n"
    )
    data_dir = tmp / "cp-data"
    env = cli_env(data_dir, TOLLWAY_CONFIG=str(config))
    procs: list[subprocess.Popen[Any]] = [sim.proc]
    try:
        mp = tollway_json(
            data_dir,
            *("model-providers", "create", "--type", "openai", "--name", "store-openai"),
            *("--base-url", f"{sim.url}/v1", "--api-key", "sk-store-openai"),
            env=env,
        )
        exact = tollway_json(
            data_dir,
            *("routing-policies", "create", "--name", "exact", "--providers", mp["id"]),
            env=env,
        )
        pinned = tollway_json(
            data_dir,
            *("routing-policies", "create", "--name", "pinned"),
            *("--providers", f"{mp['id']}:gpt-4o-mini"),
            env=env,
        )
        keys = {
            "merged": _key(env, data_dir, "merged"),
            "limited": _key(
                env,
                data_dir,
                "limited",
                "--config-json",
                '{"models_allowed": ["gpt-4o-mini", "claude-haiku-*"]}',
            ),
            "exact": _key(env, data_dir, "exact", "--routing-policy", exact["id"]),
            "pinned": _key(env, data_dir, "pinned", "--routing-policy", pinned["id"]),
        }
        cp = start_control_plane(data_dir, env={**env, "TOLLWAY_ADMIN_TOKEN": ADMIN_TOKEN})
        procs.append(cp.proc)
        port = free_port()
        gw_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LW_", "TOLLWAY_", "GATEWAY_REDIS"))
        }
        gw_env.update(SECRETS_ENV)
        gw_env.update(
            {
                "LW_GATEWAY_BASE_URL": cp.url,
                "TOLLWAY_CONFIG": str(config),
                "TOLLWAY_DATA_DIR": str(tmp / "gw-data"),
                # Loopback upstreams (the simulator) need it; everything else is production.
                "ENVIRONMENT": "local",
                "SERVER_ADDR": f"127.0.0.1:{port}",
                "LOG_FORMAT": "json",
            }
        )
        log = tmp / "gateway.log"
        with log.open("wb") as fh:
            gw = subprocess.Popen(
                [sys.executable, "-m", "tollway", "serve"],
                env=gw_env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        procs.append(gw)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert gw.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Setup(url, cp, env, keys, static.secret, mp["id"])
    finally:
        for proc in reversed(procs):
            stop(proc)


def test_a_key_without_a_policy_reaches_store_and_config_file_providers(setup: Setup) -> None:
    raw = setup.openai("merged").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HI
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-langwatch-provider"] == "openai"
    assert raw.headers["x-langwatch-provider-name"] == "store-openai"
    # The config file's anthropic provider, for a claude model — no longer
    # "403 model_not_routable (providers: openai)".
    msg = setup.anthropic("merged").messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=16, messages=HI
    )
    assert msg.parse().content
    assert msg.headers["x-langwatch-provider"] == "anthropic"
    assert msg.headers["x-langwatch-provider-name"] == "cfg-anthropic"
    assert msg.headers["x-langwatch-fallback-count"] == "0"


def test_models_list_is_the_keys_chain(setup: Setup) -> None:
    ids = [m.id for m in setup.openai("merged").models.list()]
    # Store chain first, then the config file's providers.
    assert ids[:2] == ["gpt-4o", "gpt-4o-mini"]
    assert {"claude-sonnet-4-5", "claude-haiku-4-5"} <= set(ids)
    assert ids.index("gpt-4o") < ids.index("claude-sonnet-4-5")
    owned = {m.id: m.owned_by for m in setup.openai("merged").models.list()}
    assert owned["gpt-4o"] == "openai" and owned["claude-haiku-4-5"] == "anthropic"


def test_models_list_respects_models_allowed(setup: Setup) -> None:
    assert [m.id for m in setup.openai("limited").models.list()] == [
        "gpt-4o-mini",
        "claude-haiku-4-5",
    ]


def test_a_routing_policy_is_exactly_its_chain(setup: Setup) -> None:
    ok = setup.openai("exact").chat.completions.create(model="gpt-4o", messages=HI)
    assert ok.choices[0].message.content
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        setup.anthropic("exact").messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=HI
        )
    err = info.value.body["error"]  # type: ignore[index]
    assert err["code"] == "model_not_routable"
    assert "(providers: openai)" in err["message"]
    ids = [m.id for m in setup.openai("exact").models.list()]
    assert "gpt-4o" in ids and not any(i.startswith("claude") for i in ids)


def test_a_pinned_policy_lists_its_pinned_model(setup: Setup) -> None:
    assert [m.id for m in setup.openai("pinned").models.list()] == ["gpt-4o-mini"]
    raw = setup.openai("pinned").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HI
    )
    assert raw.headers["x-langwatch-model"] == "gpt-4o-mini"


def test_a_static_key_reaches_the_config_file_as_before(setup: Setup) -> None:
    ids = [m.id for m in setup.openai(setup.static).models.list()]
    assert ids == ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
    msg = setup.anthropic(setup.static).messages.create(
        model="claude-haiku-4-5", max_tokens=16, messages=HI
    )
    assert msg.content
    with pytest.raises(openai.PermissionDeniedError):
        setup.openai(setup.static).chat.completions.create(model="gpt-4o", messages=HI)


def test_listings_show_the_config_file_provider_read_only(setup: Setup) -> None:
    rows = tollway_json(setup.cp.data_dir, "model-providers", "list", env=setup.env)
    assert [(r["name"], r["source"]) for r in rows] == [
        ("store-openai", "store"),
        ("cfg-anthropic", "config"),
    ]
    assert rows[1]["read_only"] is True and rows[1]["api_key"] == "sk-…file"
    table = tollway(setup.cp.data_dir, "model-providers", "list", env=setup.env).stdout
    assert "config file (read-only)" in table
    refused = tollway(
        setup.cp.data_dir,
        *("model-providers", "update", "cfg-anthropic", "--priority", "3"),
        env=setup.env,
        check=False,
    )
    assert refused.returncode == 1 and "edit the config file" in refused.stderr
    admin = httpx.get(
        f"{setup.cp.url}/api/admin/model-providers",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert admin.status_code == 200, admin.text
    listed = admin.json()
    rows = listed["data"] if isinstance(listed, dict) else listed
    assert [(r["name"], r["source"]) for r in rows] == [
        ("store-openai", "store"),
        ("cfg-anthropic", "config"),
    ]
    assert "sk-ant-config-file" not in admin.text
