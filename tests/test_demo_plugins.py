"""``tollway serve --demo --config FILE`` keeps what the file configures: a provider plugin's
provider is served beside the simulator's, and a static key named ``demo`` lends its config
(guardrails, model limits, …) to the demo key — so an author tries a plugin in one command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import anthropic
import openai
import pytest
from conftest import Simulator, free_port, stop
from test_hub_translation import CHAT_ONLY

from tollway.testing_plugins import plugin_site

HELLO = [{"role": "user", "content": "hi"}]


def test_demo_keeps_configured_plugins(sim: Simulator, tmp_path: Path) -> None:
    env = plugin_site(tmp_path / "site", "tollway-test-chat-only", CHAT_ONLY)
    config = tmp_path / "tollway.toml"
    config.write_text(
        f"""
[[providers]]
name = "tiny"
type = "chat-only"
base_url = "{sim.url}/v1"
api_key = "sk-tiny"

[[plugin.static-keys.keys]]
name = "demo"
secret = "ignored-the-demo-key-is-used"
config = {{ models_allowed = ["tiny-*", "gpt-4o*"], guardrails = {{ pre = ["pii"] }} }}
"""
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway", "serve", "--demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            **env,
            "TOLLWAY_CONFIG": str(config),
            "TOLLWAY_DATA_DIR": str(tmp_path / "data"),
        },
    )
    try:
        assert proc.stdout is not None
        key, lines = "", []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not key:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.match(r"\s*export OPENAI_API_KEY=(\S+)", line)
            key = m.group(1) if m else ""
        assert key, "".join(lines)
        banner = "".join(lines)
        # The banner says the file's provider is served too, not only the simulator.
        assert (
            "(upstream: the built-in provider simulator, and tiny from the configuration file;"
            in banner
        ), banner
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
        # The plugin's provider and the simulator's both answer.
        tiny = client.chat.completions.with_raw_response.create(model="tiny-1", messages=HELLO)  # type: ignore[arg-type]
        assert tiny.headers["x-langwatch-provider"] == "chat-only"
        sim_reply = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=HELLO,  # type: ignore[arg-type]
        )
        assert sim_reply.headers["x-langwatch-provider"] == "openai"
        # The Anthropic SDK reaches the chat-only plugin through the core's translation.
        claude = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
        assert claude.messages.create(model="tiny-1", max_tokens=20, messages=HELLO).content  # type: ignore[arg-type]
        # The demo key carries the configured key's config: its guardrails …
        client.chat.completions.create(
            model="tiny-1",
            messages=[{"role": "user", "content": "mail alice@example.com please"}],
        )
        sent = sim.recorded_request()["json"]["messages"][0]["content"]
        assert "alice@example.com" not in sent and "[REDACTED_EMAIL]" in sent, sent
        # … and its model limits.
        with pytest.raises(anthropic.PermissionDeniedError, match="models_allowed"):
            claude.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=HELLO)  # type: ignore[arg-type]
    finally:
        stop(proc)
