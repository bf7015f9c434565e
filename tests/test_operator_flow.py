"""Issue 4's "done when", as an operator would do it: the CLI alone, a running gateway.

Add an OpenAI-compatible provider, mint a key with ``models_allowed``, call the gateway with
the SDK, rotate and revoke the key — each step takes effect on the running gateway.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import Simulator

from tollway.testing import GatewayProcess, cli_json, free_port, stop, wait_ready

pytest.importorskip("tollway_control_plane")
pytest.importorskip("tollway_vk_auth")

HELLO = [{"role": "user", "content": "hi"}]


cli = cli_json


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)


def eventually(check: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_operator_flow_from_the_cli(sim: Simulator, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TOLLWAY_DATA_DIR": str(tmp_path / "data"),
        "ENVIRONMENT": "local",
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
        "LOG_FORMAT": "json",
    }
    for name in ("LW_GATEWAY_BASE_URL", "TOLLWAY_PLUGINS", "TOLLWAY_ADMIN_URL"):
        env.pop(name, None)
    # 1. An OpenAI-compatible provider (the simulator) and a key limited to gpt-4o*.
    provider = cli(
        env,
        "model-providers",
        "create",
        "--type",
        "custom",
        "--name",
        "compatible",
        "--base-url",
        f"{sim.url}/v1",
        "--api-key",
        "sk-compatible-upstream",
    )
    assert provider["id"]
    key = cli(
        env,
        "virtual-keys",
        "create",
        "--name",
        "backend",
        "--config-json",
        '{"models_allowed": ["gpt-4o*"]}',
    )
    secret, key_id = key["secret"], key["id"]
    assert len(secret) == 40 and secret.startswith("lw_vk_live_")

    log = tmp_path / "gateway.log"
    with log.open("wb") as fh:
        gw = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(GatewayProcess(gw, url, [], log, log, tmp_path / "data"))
        # 2. The SDK call works, with the provider's credential upstream.
        reply = client(url, secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert reply.choices[0].message.content
        headers = {k.lower(): v for k, v in sim.last_request()["headers"]}
        assert headers["authorization"] == "Bearer sk-compatible-upstream"
        # models_allowed applies.
        with pytest.raises(openai.PermissionDeniedError) as info:
            client(url, secret).chat.completions.create(model="o3-mini", messages=HELLO)
        assert info.value.response.json()["error"]["type"] == "model_not_allowed"

        # 3. Rotate: the new secret works at once, the old one keeps working (24 h overlap).
        rotated = cli(env, "virtual-keys", "rotate", key_id)
        new_secret = rotated["secret"]
        assert new_secret != secret
        for s in (new_secret, secret):
            assert client(url, s).chat.completions.create(model="gpt-4o", messages=HELLO).choices

        # 4. Widen the allow-list: the running gateway sees it within ~1 s.
        cli(env, "virtual-keys", "update", key_id, "--config-json", '{"models_allowed": null}')

        def o3_allowed() -> None:
            try:
                client(url, new_secret).chat.completions.create(model="o3-mini", messages=HELLO)
            except openai.PermissionDeniedError as exc:
                raise AssertionError("models_allowed change not seen yet") from exc

        eventually(o3_allowed)

        # 5. Revoke: refused within 2 s, with both secrets.
        cli(env, "virtual-keys", "revoke", key_id)

        def refused() -> None:
            for s in (new_secret, secret):
                try:
                    client(url, s).chat.completions.create(model="gpt-4o", messages=HELLO)
                except openai.AuthenticationError:
                    continue
                raise AssertionError("revoked key still accepted")

        eventually(refused)
        assert secret not in log.read_text() and new_secret not in log.read_text()
    finally:
        stop(gw)
