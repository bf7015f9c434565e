"""The operator's first hour, as a new user does it (issue 17's "done when").

From an empty directory: a ``tollway.toml`` with two providers, ``tollway serve --config
tollway.toml`` in a production configuration (SSRF guard on; the simulator on loopback is
reachable only because the file says ``allow_private_network = true``), every upstream call
through a real HTTP proxy (``LW_GATEWAY_OUTBOUND_PROXY``). With the CLI given the same
``--config``: a key, a budget and a routing policy; both SDKs call with the key, the key lists
its models, and the budget shows the spend — no step talks to another store. A wrong provider
host holds ``/startupz`` with the reference's log line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import Simulator
from test_egress_proxy import Proxy

from tollway.testing import GatewayProcess, free_port, stop, wait_ready

pytest.importorskip("tollway_control_plane")
pytest.importorskip("tollway_vk_auth")
pytest.importorskip("tollway_budgets")

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
    "ENVIRONMENT",
    "GATEWAY_OUTBOUND_ALLOW_CIDRS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in _UNSET}
    out.update({"SERVER_DRAIN_DELAY_SECONDS": "0", "LOG_FORMAT": "json", **extra})
    return out


def tollway(folder: Path, *args: str) -> Any:
    """``tollway ARGS --config tollway.toml --json`` from ``folder``; its JSON answer."""
    out = subprocess.run(
        [sys.executable, "-m", "tollway", *args, "--config", "tollway.toml", "--json"],
        cwd=folder,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"tollway {' '.join(args)}: {out.stderr}"
    # Every command says which store it used: the gateway's, from the same file.
    assert "(data dir from tollway.toml data_dir)" in out.stderr, out.stderr
    return json.loads(out.stdout)


def write_config(folder: Path, port: int, sim_url: str, openai_url: str | None = None) -> None:
    (folder / "tollway.toml").write_text(
        f"""data_dir = "state"

[server]
addr = "127.0.0.1:{port}"

[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{openai_url or sim_url + "/v1"}"
api_key = "sk-sim-openai"
allow_private_network = true

[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{sim_url}"
api_key = "sk-ant-sim"
allow_private_network = true
"""
    )


def serve(folder: Path, proxy: Proxy) -> subprocess.Popen[bytes]:
    with (folder / "gateway.log").open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "--config", "tollway.toml"],
            cwd=folder,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env(LW_GATEWAY_OUTBOUND_PROXY=proxy.url),
        )


def test_the_first_hour(sim: Simulator, tmp_path: Path) -> None:
    folder = tmp_path / "gateway"
    folder.mkdir()
    proxy = Proxy(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    write_config(folder, port, sim.url)
    proc = serve(folder, proxy)
    try:
        log = folder / "gateway.log"
        gw = GatewayProcess(proc, url, [], log, folder / "tollway.toml", folder / "state")
        wait_ready(gw, netcheck=True)  # the start-up netcheck (of the proxy) passed too
        budget = _calls(folder, url)
    finally:
        stop(proc)  # drains: the last settlements reach the ledger, pooled proxy links close
        proxy.stop()
    # The upstream calls went through the proxy (proxy.py logs the first request of each
    # client connection when it closes; the gateway's calls share a kept-alive one).
    seen = proxy.seen()
    assert any(line.startswith("POST 127.0.0.1:") for line in seen), seen

    # The spend, in the same store, from the CLI.
    deadline = time.monotonic() + 10
    while True:
        [row] = [b for b in tollway(folder, "gateway-budgets", "list") if b["id"] == budget]
        if row["usage"]["requests"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert row["usage"]["requests"] == 3, row
    assert row["spend_micro_usd"] > 0, row
    assert row["usage"]["input_tokens"] > 0 and row["usage"]["output_tokens"] > 0


def _calls(folder: Path, url: str) -> str:
    """The CLI steps and the SDK calls; the budget's id."""
    providers = tollway(folder, "model-providers", "list")
    assert {p["name"]: p["source"] for p in providers} == {
        "sim-openai": "config",
        "sim-anthropic": "config",
    }
    policy = tollway(
        folder,
        "routing-policies",
        "create",
        "--name",
        "claude-first",
        "--providers",
        "sim-anthropic,sim-openai",
    )
    key = tollway(folder, "vk", "create", "--name", "app", "--routing-policy", policy["id"])
    budget = tollway(
        folder,
        "gateway-budgets",
        "create",
        "--scope",
        f"virtual_key:{key['id']}",
        "--window",
        "day",
        "--limit",
        "10",
    )
    secret = key["secret"]

    oai = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=20)
    reply = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert reply.http_response.status_code == 200
    assert reply.headers["x-langwatch-provider-name"] == "sim-openai"
    assert reply.parse().choices[0].message.content
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    assert any(c.choices and c.choices[0].delta.content for c in chunks)

    claude = anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0, timeout=20)
    message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text

    # The key lists the models of its own chain (the policy's providers).
    models = [m.id for m in oai.models.list()]
    assert "gpt-4o-mini" in models and any(m.startswith("claude") for m in models)
    return str(budget["id"])


def test_a_wrong_provider_host_holds_startupz(sim: Simulator, tmp_path: Path) -> None:
    folder = tmp_path / "gateway"
    folder.mkdir()
    port = free_port()
    write_config(folder, port, sim.url, openai_url="https://api.no-such-host.invalid/v1")
    with (folder / "gateway.log").open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "--config", "tollway.toml"],
            cwd=folder,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env(),
        )
    try:
        gw = GatewayProcess(
            proc, f"http://127.0.0.1:{port}", [], folder / "gateway.log", folder, folder
        )
        wait_ready(gw)  # started, netcheck failing
        r = httpx.get(f"http://127.0.0.1:{port}/startupz", timeout=5)
        assert r.status_code == 503
        assert "dns resolution failed: lookup api.no-such-host.invalid" in r.text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        stop(proc)
    assert (
        "dns resolution failed: lookup api.no-such-host.invalid"
        in (folder / "gateway.log").read_text()
    )
