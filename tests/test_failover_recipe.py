"""The migration guide's "Automatic failover when OpenAI is flaky", from the CLI: a key whose
routing policy is OpenAI-primary, Anthropic-backup (pinned to a Claude model) keeps answering an
OpenAI-SDK client when the OpenAI upstream fails — non-streaming and streaming."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import Simulator

from tollway.testing import GatewayProcess, cli_json, free_port, start_simulator, stop, wait_ready

pytest.importorskip("tollway_control_plane")
pytest.importorskip("tollway_vk_auth")

HELLO = [{"role": "user", "content": "Say hello"}]


cli = cli_json


@pytest.fixture
def flaky_openai() -> Iterator[Simulator]:
    s = start_simulator("--fault", "503")
    yield s
    stop(s.proc)


def test_openai_primary_anthropic_backup(
    sim: Simulator, flaky_openai: Simulator, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TOLLWAY_DATA_DIR": str(tmp_path / "data"),
        "ENVIRONMENT": "local",
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
    }
    for name in ("LW_GATEWAY_BASE_URL", "TOLLWAY_PLUGINS", "TOLLWAY_ADMIN_URL"):
        env.pop(name, None)
    primary = cli(
        env,
        "model-providers",
        "create",
        "--type",
        "openai",
        "--name",
        "openai-prod",
        "--base-url",
        f"{flaky_openai.url}/v1",
        "--api-key",
        "sk-openai",
    )
    backup = cli(
        env,
        "model-providers",
        "create",
        "--type",
        "anthropic",
        "--name",
        "anthropic-backup",
        "--base-url",
        sim.url,
        "--api-key",
        "sk-ant-backup",
        "--config-json",
        '{"default_max_tokens": 512}',
    )
    policy = cli(
        env,
        "routing-policies",
        "create",
        "--name",
        "openai-then-claude",
        "--providers",
        f"{primary['id']},{backup['id']}:claude-haiku-4-5",
    )
    key = cli(
        env,
        "virtual-keys",
        "create",
        "--name",
        "app",
        "--routing-policy",
        policy["id"],
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(GatewayProcess(proc, url, [], log, log, tmp_path / "data"))
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key["secret"], max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HELLO, max_tokens=200
        )
        reply = raw.parse()
        assert reply.choices[0].message.content
        assert raw.headers["x-langwatch-fallback-count"] == "1"
        assert raw.headers["x-langwatch-provider"] == "anthropic"
        assert raw.headers["x-langwatch-model"] == "claude-haiku-4-5"
        assert reply.model == "claude-haiku-4-5"
        assert flaky_openai.requests(), "the primary was tried first"

        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=HELLO, max_tokens=200, stream=True
        ) as streamed:
            assert streamed.headers["x-langwatch-fallback-count"] == "1"
            assert streamed.headers["x-langwatch-provider"] == "anthropic"
            text = "".join(
                chunk.choices[0].delta.content or "" for chunk in streamed.parse() if chunk.choices
            )
        assert text == reply.choices[0].message.content
    finally:
        stop(proc)
