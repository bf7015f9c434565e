"""Drive the real Claude Code and Codex CLIs through a gateway to the provider simulator.

Run by ``test_agents_real_cli.py`` inside a loopback-only network namespace (``unshare -n``):
nothing here can reach the internet. It brings ``lo`` up, starts the simulator, registers it as
two model providers and creates virtual keys **with the control-plane CLI** (as docs/claude-code.md
and docs/codex.md tell a user to), starts ``tollway serve`` on the same data dir, runs each
scenario and writes what happened to a JSON file for the test to judge::

    python agents_cli_driver.py --bin NODE_MODULES/.bin --tmp DIR --out results.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tollway.testing import GatewayProcess, Simulator, start_gateway, start_simulator, stop

PROMPT = "Run `echo ok` with your shell tool, then tell me what it printed."
DENY = {"policy_rules": {"tools": {"deny": ["^Bash$", "^exec$", "^exec_command$"]}}}
CLI_TIMEOUT_S = int(os.environ.get("AGENT_CLI_TIMEOUT", "150"))


def tollway(data_dir: Path, *args: str) -> str:
    """Run the ``tollway`` CLI on the gateway's data dir; its stdout."""
    env = {**os.environ, "TOLLWAY_DATA_DIR": str(data_dir), "ENVIRONMENT": "local"}
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise SystemExit(f"tollway {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def create_key(data_dir: Path, name: str, config: dict[str, Any] | None = None) -> str:
    args = ["virtual-keys", "create", "--name", name, "--json"]
    if config:
        args += ["--config-json", json.dumps(config)]
    return str(json.loads(tollway(data_dir, *args))["secret"])


def codex_home(root: Path, config: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(config)
    return root


def provider_entry(base_url: str, model: str | None) -> str:
    """The ``config.toml`` docs/codex.md shows."""
    return (f'model = "{model}"\n' if model else "") + (
        'model_provider = "tollway"\n\n'
        "[model_providers.tollway]\n"
        'name = "Tollway"\n'
        f'base_url = "{base_url}/v1"\n'
        'env_key = "TOLLWAY_API_KEY"\n'
        'wire_api = "responses"\n'
    )


def run_cli(
    name: str,
    argv: list[str],
    env: dict[str, str],
    tmp: Path,
    sim: Simulator,
    gw: GatewayProcess,
) -> dict[str, Any]:
    """Run one CLI scenario; what the CLI printed, what the simulator received, what the
    gateway logged."""
    sim.clear()
    work = tmp / name
    work.mkdir(parents=True, exist_ok=True)
    log_before = len(gw.log_records())
    started = time.monotonic()
    # Its own process group: the npm wrappers start the real binaries as children, and a
    # timeout must end those too.
    proc = subprocess.Popen(
        argv,
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc, err = -1, f"{err}\n[timed out after {CLI_TIMEOUT_S} s]"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything the CLI left running in its group
    elapsed = time.monotonic() - started
    time.sleep(0.5)  # request_completed is written after the response
    requests = []
    for r in sim.requests():
        raw = base64.b64decode(r["body"]) if r["body"] else b""
        requests.append(
            {
                "method": r["method"],
                "path": r["path"],
                "query_string": r["query_string"],
                "body": json.loads(raw) if raw else None,
            }
        )
    completed = [
        rec
        for rec in gw.log_records()[log_before:]
        if str(rec.get("msg", "")).startswith("request_completed")
    ]
    return {
        "argv": argv[1:],
        "rc": rc,
        "stdout": out[-20000:],
        "stderr": err[-20000:],
        "elapsed_s": round(elapsed, 1),
        "requests": requests,
        "request_completed": [str(rec["msg"]) for rec in completed],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", type=Path, required=True, help="node_modules/.bin with the CLIs")
    parser.add_argument("--tmp", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tmp: Path = args.tmp
    claude, codex = str(args.bin / "claude"), str(args.bin / "codex")

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    sim = start_simulator()
    gw: GatewayProcess | None = None
    try:
        data_dir = tmp / "gw" / "data"  # where start_gateway points TOLLWAY_DATA_DIR
        tollway(data_dir, "model-providers", "create", "--type", "openai", "--name", "sim-openai",
                "--base-url", f"{sim.url}/v1", "--api-key", "sk-sim-openai")  # fmt: skip
        tollway(data_dir, "model-providers", "create", "--type", "anthropic", "--name",
                "sim-anthropic", "--base-url", sim.url, "--api-key", "sk-ant-sim")  # fmt: skip
        key = create_key(data_dir, "coding-agents")
        deny_key = create_key(data_dir, "coding-agents-no-shell", DENY)
        key_id = json.loads(tollway(data_dir, "virtual-keys", "list", "--json"))
        key_id = next(k["id"] for k in key_id if k["name"] == "coding-agents")
        # What docs/claude-code.md and docs/codex.md show: the agents' spend, with the cached
        # and reasoning tokens behind it, in the budget list.
        tollway(data_dir, "gateway-budgets", "create", "--scope", f"virtual_key:{key_id}",
                "--window", "day", "--limit", "20")  # fmt: skip
        gw = start_gateway(tmp / "gw", keys=[])

        home = tmp / "home"
        home.mkdir(parents=True, exist_ok=True)
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "OPENAI_", "CODEX_", "CLAUDE_"))
        }
        base.update(HOME=str(home), NO_COLOR="1")
        claude_env = {
            **base,
            "ANTHROPIC_BASE_URL": gw.url,
            "CLAUDE_CONFIG_DIR": str(tmp / "claude-config"),
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        claude_argv = [claude, "-p", PROMPT, "--allowedTools", "Bash"]
        results: dict[str, Any] = {}
        results["claude"] = run_cli(
            "claude", claude_argv, {**claude_env, "ANTHROPIC_API_KEY": key}, tmp, sim, gw
        )
        results["claude_denied"] = run_cli(
            "claude_denied",
            claude_argv,
            {**claude_env, "ANTHROPIC_AUTH_TOKEN": deny_key},
            tmp,
            sim,
            gw,
        )

        codex_argv = [codex, "exec", "--skip-git-repo-check", PROMPT]
        scenarios = [
            ("codex", provider_entry(gw.url, None), key),
            ("codex_gpt55", provider_entry(gw.url, "gpt-5.5"), key),
            ("codex_denied", provider_entry(gw.url, None), deny_key),
        ]
        for name, config, secret in scenarios:
            env = {
                **base,
                "CODEX_HOME": str(codex_home(tmp / f"{name}-home", config)),
                "TOLLWAY_API_KEY": secret,
            }
            results[name] = run_cli(name, codex_argv, env, tmp, sim, gw)
        # The built-in provider pointed at the gateway: it tries the WebSocket first.
        builtin = codex_home(tmp / "codex_builtin-home", f'openai_base_url = "{gw.url}/v1"\n')
        results["codex_builtin"] = run_cli(
            "codex_builtin",
            codex_argv,
            {**base, "CODEX_HOME": str(builtin), "CODEX_API_KEY": key},
            tmp,
            sim,
            gw,
        )
    finally:
        if gw is not None:
            stop(gw.proc)  # drains: the last ledger entries are written before it exits
        stop(sim.proc)
    results["budgets"] = json.loads(tollway(data_dir, "gateway-budgets", "list", "--json"))
    results["budgets_table"] = tollway(data_dir, "gateway-budgets", "list")
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
