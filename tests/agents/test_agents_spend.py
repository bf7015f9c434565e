"""Issue 10's last "done when": the coding agents' spend, cached tokens and reasoning tokens
appear in ``tollway gateway-budgets list``.

As an operator would do it: the CLI creates the providers (the simulator), a virtual key and a
budget on that key; a gateway with every installed plugin serves the captured Claude Code and
Codex requests twice (the second time their long prompts are cache hits, as in a real session);
then ``gateway-budgets list`` shows the spend and what it paid for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents_harness import posts, send

from tollway.testing import (
    GatewayProcess,
    Simulator,
    cli_json,
    free_port,
    start_simulator,
    stop,
    wait_ready,
)

pytest.importorskip("tollway_control_plane")
pytest.importorskip("tollway_vk_auth")
pytest.importorskip("tollway_budgets")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


def _env(tmp: Path, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "TOLLWAY_DATA_DIR": str(tmp / "data"),
        "ENVIRONMENT": "local",
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
        "LOG_FORMAT": "json",
    }
    for name in ("LW_GATEWAY_BASE_URL", "TOLLWAY_PLUGINS", "TOLLWAY_ADMIN_URL"):
        env.pop(name, None)
    return env


def _cli_text(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_agent_spend_with_cached_and_reasoning_tokens_in_budget_list(
    sim: Simulator, tmp_path: Path
) -> None:
    port = free_port()
    env = _env(tmp_path, port)
    for type_, base in (("openai", f"{sim.url}/v1"), ("anthropic", sim.url)):
        cli_json(env, "model-providers", "create", "--type", type_, "--name", type_,
                 "--base-url", base, "--api-key", f"sk-{type_}-upstream")  # fmt: skip
    key = cli_json(env, "virtual-keys", "create", "--name", "coding-agents")
    budget = cli_json(
        env, "gateway-budgets", "create", "--scope", f"virtual_key:{key['id']}",
        "--window", "month", "--limit", "100",
    )  # fmt: skip

    log = tmp_path / "gateway.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(GatewayProcess(proc, url, [], log, log, tmp_path / "data"))
        sent = 0
        for _round in range(2):
            for name, _index, request in posts():
                response, raw = send(url, request, key["secret"], add_key="openai-base-url" in name)
                assert response.status_code == 200, raw[:2000]
                sent += 1
    finally:
        stop(proc)  # drains: every settlement reaches the ledger before it exits

    # The ledger is written from the budgets plugin's outbox; poll briefly.
    deadline = time.monotonic() + 10
    while True:
        (row,) = [b for b in cli_json(env, "gateway-budgets", "list") if b["id"] == budget["id"]]
        usage: dict[str, Any] = row["usage"]
        if usage["requests"] == sent or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert usage["requests"] == sent
    assert row["spend_micro_usd"] > 0 and row["spend_usd"] != "0.00"
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    # Claude Code marks cache breakpoints and Codex's prompts are far over OpenAI's 1,024-token
    # caching floor: the second round reads its prompts from the cache.
    assert usage["cache_read_input_tokens"] > 0
    assert usage["cache_creation_input_tokens"] > 0  # Claude Code's first round wrote the cache
    # Codex asks for reasoning; the simulator answers with reasoning tokens.
    assert usage["reasoning_tokens"] > 0

    table = _cli_text(env, "gateway-budgets", "list")
    header, *rows = table.splitlines()
    assert header.split() == [
        "ID", "SCOPE", "WINDOW", "LIMIT", "SPENT", "REQUESTS", "INPUT", "OUTPUT", "CACHE",
        "READ", "CACHE", "WRITE", "REASONING", "ON", "BREACH", "NAME",
    ]  # fmt: skip
    (line,) = [r for r in rows if r.startswith(budget["id"])]
    for value in (
        usage["requests"],
        usage["cache_read_input_tokens"],
        usage["reasoning_tokens"],
    ):
        assert f"{value:,}" in line.split()
    assert f"${row['spend_usd']}" in line.split()
