"""Routing-policy strategies from the CLI to the gateway (embedded control plane, real
simulators): ``--providers a:3,b:1`` splits 75/25, ``--strategy least-latency`` moves traffic
to the faster provider, and an OpenAI SDK call without ``max_tokens`` fails over from a
500-ing OpenAI provider to an Anthropic one and succeeds, saying which default it used."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import Simulator

from tollway.testing import GatewayProcess, cli_json, free_port, start_simulator, stop, wait_ready

pytest.importorskip("tollway_control_plane")
pytest.importorskip("tollway_vk_auth")

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, Simulator]]:
    started = {
        "fast": start_simulator(),
        "other": start_simulator(),
        "slow": start_simulator("--latency-ms", "40"),
        "down": start_simulator("--fault", "500"),
    }
    yield started
    for s in started.values():
        stop(s.proc)


@pytest.fixture(scope="module")
def stack(sims: dict[str, Simulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("routing")
    port = free_port()
    env = {
        **os.environ,
        "TOLLWAY_DATA_DIR": str(tmp / "data"),
        "ENVIRONMENT": "local",
        "SERVER_ADDR": f"127.0.0.1:{port}",
        "SERVER_DRAIN_DELAY_SECONDS": "0",
    }
    for name in ("LW_GATEWAY_BASE_URL", "TOLLWAY_PLUGINS", "TOLLWAY_ADMIN_URL", "TOLLWAY_CONFIG"):
        env.pop(name, None)
    # The CLI loads only the control plane: it starts faster (the gateway loads everything).
    cli_env = {**env, "TOLLWAY_PLUGINS": "tollway-control-plane"}

    def provider(name: str, sim: str, type_: str = "openai") -> str:
        url = sims[sim].url + ("/v1" if type_ == "openai" else "")
        created = cli_json(
            cli_env,
            "model-providers",
            "create",
            "--type",
            type_,
            "--name",
            name,
            "--base-url",
            url,
            "--api-key",
            f"sk-{name}-0000000000",
        )
        return str(created["id"])

    ids = {
        "a": provider("a", "fast"),
        "b": provider("b", "other"),
        "slow": provider("slow", "slow"),
        "down": provider("down", "down"),
        "claude": provider("claude", "other", "anthropic"),
    }

    def key(name: str, providers: str, *extra: str) -> str:
        policy = cli_json(
            cli_env, "routing-policies", "create", "--name", name, "--providers", providers, *extra
        )
        created = cli_json(
            cli_env, "virtual-keys", "create", "--name", name, "--routing-policy", policy["id"]
        )
        return str(created["secret"])

    keys = {
        "split": key("split", f"{ids['a']}:3,{ids['b']}:1"),
        "latency": key("latency", f"{ids['slow']},{ids['a']}", "--strategy", "least-latency"),
        "failover": key("failover", f"{ids['down']},{ids['claude']}:claude-haiku-4-5"),
    }
    policies = cli_json(cli_env, "routing-policies", "list")
    assert {p["name"]: p["strategy"] for p in policies} == {
        "split": "weighted",
        "latency": "least-latency",
        "failover": "ordered",
    }
    log = tmp / "gateway.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(GatewayProcess(proc, url, [], log, log, tmp / "data"))
        yield url, keys
    finally:
        stop(proc)


def _names(url: str, key: str, n: int) -> list[str]:
    out = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=20) as c:
        for _ in range(n):
            r = c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
            assert r.status_code == 200, r.text
            assert r.headers["x-langwatch-provider"] == "openai"
            out.append(r.headers["x-langwatch-provider-name"])
    return out


def test_weighted_policy_splits_three_to_one(stack: Any) -> None:
    url, keys = stack
    seen = Counter(_names(url, keys["split"], 1000))
    assert 700 <= seen["a"] <= 800 and seen["a"] + seen["b"] == 1000, seen


def test_least_latency_policy_shifts_to_the_fast_provider(stack: Any) -> None:
    url, keys = stack
    names = _names(url, keys["latency"], 250)
    late = Counter(names[50:])
    assert late["a"] >= 180, late  # "a" is the simulator without latency


def test_openai_sdk_without_max_tokens_fails_over_to_anthropic(stack: Any) -> None:
    url, keys = stack
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=keys["failover"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-langwatch-provider"] == "anthropic"
    assert raw.headers["x-langwatch-provider-name"] == "claude"
    assert raw.headers["x-langwatch-fallback-count"] == "1"
    # claude-haiku-4-5 may write 64000 tokens; [routing] default_max_tokens (4096) caps it.
    assert raw.headers["x-langwatch-default-max-tokens"] == "4096"
