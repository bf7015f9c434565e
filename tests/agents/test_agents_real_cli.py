"""Opt-in: the real Claude Code and Codex CLIs through the gateway, a tool turn each.

Skipped unless ``TOLLWAY_AGENT_TESTS=1``. It installs ``@anthropic-ai/claude-code@2.1.330`` and
``@openai/codex@0.169.0`` from the npm registry into a cache dir (``TOLLWAY_AGENT_CACHE``,
default ``~/.cache/tollway/agent-clis``; about 800 MB, downloaded once), then runs
``agents_cli_driver.py`` inside a loopback-only network namespace (``unshare -n``, or
``unshare -rn`` when not root): the CLIs can reach the gateway and nothing else. Needs ``node``
with ``npm``, ``unshare`` and ``ip``.

Each CLI must complete a two-request tool turn (the simulator answers with a call of the CLI's
shell tool running ``echo ok``, the CLI runs it and sends the result back) and exit 0; with a
key whose ``policy_rules.tools.deny`` names the shell tool it must show the 403
``tool_not_allowed`` message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CLAUDE_CODE = "@anthropic-ai/claude-code@2.1.330"
CODEX = "@openai/codex@0.169.0"
DRIVER = Path(__file__).parent / "agents_cli_driver.py"

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("TOLLWAY_AGENT_TESTS") != "1",
        reason="real coding-agent CLIs: set TOLLWAY_AGENT_TESTS=1 (downloads them from npm)",
    ),
    pytest.mark.slow,
    pytest.mark.timeout(1200),
]


def _cache_dir() -> Path:
    root = os.environ.get("TOLLWAY_AGENT_CACHE") or str(
        Path.home() / ".cache" / "tollway" / "agent-clis"
    )
    tag = f"{CLAUDE_CODE}_{CODEX}".replace("@", "").replace("/", "-")
    return Path(root) / tag


def _install() -> Path:
    """node_modules/.bin with both CLIs at the pinned versions (npm install, once)."""
    prefix = _cache_dir()
    bin_dir = prefix / "node_modules" / ".bin"
    if (bin_dir / "claude").exists() and (bin_dir / "codex").exists():
        return bin_dir
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("TOLLWAY_AGENT_TESTS=1 needs node and npm on PATH")
    prefix.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", CLAUDE_CODE, CODEX],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        pytest.fail(f"npm install failed:\n{done.stdout}\n{done.stderr}")
    return bin_dir


def _namespace() -> list[str]:
    """``unshare`` for a fresh network namespace (only ``lo``)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("TOLLWAY_AGENT_TESTS=1 needs unshare and ip (util-linux, iproute2)")
    cmd = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    probe = subprocess.run([*cmd, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"cannot create a network namespace with {' '.join(cmd)}: {probe.stderr}")
    return cmd


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    bin_dir = _install()
    for cli, version in (("claude", "2.1.330"), ("codex", "0.169.0")):
        shown = subprocess.run(
            [str(bin_dir / cli), "--version"], capture_output=True, text=True, timeout=60
        )
        assert version in shown.stdout, (cli, shown.stdout, shown.stderr)
    tmp = tmp_path_factory.mktemp("agent-clis")
    out = tmp / "results.json"
    driver = [str(DRIVER), "--bin", str(bin_dir), "--tmp", str(tmp), "--out", str(out)]
    # Its own process group, so that a timeout also ends the gateway and simulator it started.
    proc = subprocess.Popen(
        [*_namespace(), sys.executable, *driver],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=1000)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0 and out.exists(), f"driver failed:\n{stdout}\n{stderr}"
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def _describe(run: dict[str, Any]) -> str:
    out, err = run["stdout"][-3000:], run["stderr"][-3000:]
    return f"rc={run['rc']}\n--- stdout\n{out}\n--- stderr\n{err}"


def _completed(run: dict[str, Any]) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in run["request_completed"]]


def _assert_accounted(run: dict[str, Any], endpoint: str, count: int) -> None:
    lines = [c for c in _completed(run) if c["status"] == "200"]
    assert len(lines) == count, run["request_completed"]
    for line in lines:
        assert line["endpoint"] == endpoint
        assert int(line["input_tokens"]) > 0 and int(line["output_tokens"]) > 0


def test_claude_code_tool_turn(runs: dict[str, Any]) -> None:
    run = runs["claude"]
    assert run["rc"] == 0, _describe(run)
    first, second = run["requests"]  # exactly two model turns
    for r in (first, second):
        assert (r["path"], r["query_string"]) == ("/v1/messages", "beta=true")
        assert r["body"]["stream"] is True
    assert first["body"]["messages"][-1]["role"] != "assistant"
    call = [b for b in second["body"]["messages"][-2]["content"] if b["type"] == "tool_use"]
    assert call and (call[0]["name"], call[0]["input"]) == ("Bash", {"command": "echo ok"})
    (result,) = second["body"]["messages"][-1]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call[0]["id"]
    assert "ok" in json.dumps(result["content"]) and not result.get("is_error")
    assert "Received the tool result" in run["stdout"]
    _assert_accounted(run, "messages", 2)


def test_claude_code_shows_the_tool_policy_refusal(runs: dict[str, Any]) -> None:
    run = runs["claude_denied"]  # ANTHROPIC_AUTH_TOKEN: the key in Authorization: Bearer
    assert run["rc"] != 0, _describe(run)
    shown = run["stdout"] + run["stderr"]
    assert "403" in shown and 'tool "Bash" is not allowed' in shown, _describe(run)
    assert "policy_rules.tools.deny" in shown
    assert run["requests"] == []
    assert [c["error_type"] for c in _completed(run)] == ["tool_not_allowed"]


def _codex_tool_turn(run: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    assert run["rc"] == 0, _describe(run)
    first, second = run["requests"]
    for r in (first, second):
        assert r["path"] == "/v1/responses" and r["body"]["stream"] is True
    assert "Received the tool result" in run["stdout"]
    _assert_accounted(run, "responses", 2)
    return first, second


def test_codex_tool_turn_default_model(runs: dict[str, Any]) -> None:
    run = runs["codex"]
    first, second = _codex_tool_turn(run)
    assert first["body"]["input"][0]["type"] == "additional_tools"
    call, output = second["body"]["input"][-2:]
    assert (call["type"], call["name"]) == ("custom_tool_call", "exec")
    assert output["type"] == "custom_tool_call_output" and output["call_id"] == call["call_id"]
    assert '"ok"' in json.dumps(output["output"])
    # A model_providers entry goes straight to POST: no WebSocket attempt.
    assert "WebSocket" not in run["stderr"], _describe(run)


def test_codex_tool_turn_gpt_5_5(runs: dict[str, Any]) -> None:
    run = runs["codex_gpt55"]
    first, second = _codex_tool_turn(run)
    assert "exec_command" in [t.get("name") for t in first["body"]["tools"]]
    call, output = second["body"]["input"][-2:]
    assert (call["type"], call["name"]) == ("function_call", "exec_command")
    assert json.loads(call["arguments"]) == {"cmd": "echo ok"}
    assert output["type"] == "function_call_output" and "ok" in output["output"]


def test_codex_shows_the_tool_policy_refusal(runs: dict[str, Any]) -> None:
    run = runs["codex_denied"]
    assert run["rc"] != 0, _describe(run)
    assert "403 Forbidden" in run["stderr"], _describe(run)
    assert 'tool "functions.exec"' in run["stderr"] and "policy_rules.tools.deny" in run["stderr"]
    assert run["requests"] == []
    # Codex retries its turn on any error status (x-should-retry is not read): 1 + 5 attempts.
    assert {c["error_type"] for c in _completed(run)} == {"tool_not_allowed"}


def test_codex_builtin_provider_falls_back_from_websocket_at_once(runs: dict[str, Any]) -> None:
    """``openai_base_url``: Codex tries ``GET /v1/responses`` (WebSocket) first; the gateway's
    426 makes it use ``POST`` at once — no reconnects (a 404 cost five, about 6 s)."""
    run = runs["codex_builtin"]
    _codex_tool_turn(run)
    assert "Reconnecting" not in run["stderr"], _describe(run)
    assert run["stderr"].count("failed to connect to Responses WebSocket") <= 1, _describe(run)


def test_agents_spend_cached_and_reasoning_tokens_in_budget_list(runs: dict[str, Any]) -> None:
    """Both CLIs ran on the ``coding-agents`` key; its budget shows what they spent and why."""
    (budget,) = [b for b in runs["budgets"] if b["scope"].startswith("virtual_key:")]
    usage = budget["usage"]
    accounted = sum(
        1
        for name in ("claude", "codex", "codex_gpt55", "codex_builtin")
        for line in _completed(runs[name])
        if line["status"] == "200"
    )
    assert usage["requests"] == accounted > 0
    assert budget["spend_micro_usd"] > 0
    assert usage["cache_read_input_tokens"] > 0  # the tool turn's second call reads the prompt
    assert usage["reasoning_tokens"] > 0  # Codex asks for reasoning
    table = runs["budgets_table"]
    assert "CACHE READ" in table and "REASONING" in table
    assert f"{usage['cache_read_input_tokens']:,}" in table
