"""Issue 5's "done when": the migration guide's policy and limit recipes, through the official
SDKs, against two replicas sharing Redis (model access, tool policy, cluster-wide rpm)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from conftest import Simulator

from tollway.testing import GatewayProcess, StaticKey, default_providers, start_gateway, stop

pytest.importorskip("tollway_rate_limits")
pytest.importorskip("tollway_policy_rules")
pytest.importorskip("tollway_model_access")

HELLO = [{"role": "user", "content": "hi"}]
BASH = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]
PLUGINS = [
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_rate_limits",
    "tollway_policy_rules",
    "tollway_model_access",
]


@pytest.fixture
def replicas(sim: Simulator, tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    key = StaticKey(
        config={
            "models_allowed": ["gpt-4o*", "claude-*"],
            "policy_rules": {"tools": {"deny": ["^Bash$", "^shell\\."]}},
            "rate_limits": {"rpm": 6},
        },
        # A fresh organization per run: the limiter's Redis keys never collide across runs.
        organization_id=f"org-{uuid.uuid4().hex[:8]}",
    )
    env = {"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0"}
    gws = [
        start_gateway(
            tmp_path / f"r{i}",
            providers=default_providers(sim.url),
            keys=[key],
            env=env,
            plugins=PLUGINS,
        )
        for i in range(2)
    ]
    yield gws
    for gw in gws:
        stop(gw.proc)


def test_policies_and_limits_hold_across_replicas(replicas: list[GatewayProcess]) -> None:
    a, b = replicas
    # Block destructive tools: refused on either replica, before reaching the model.
    for gw in (a, b):
        with pytest.raises(anthropic.PermissionDeniedError) as info:
            gw.anthropic().messages.create(
                model="claude-haiku-4-5", max_tokens=20, messages=HELLO, tools=BASH
            )
        err = info.value.response.json()["error"]
        assert err["type"] == "tool_not_allowed" and "Bash" in err["message"]
    # models_allowed: the same refusal on both.
    for gw in (a, b):
        with pytest.raises(openai.PermissionDeniedError) as info:
            gw.openai().chat.completions.create(model="o3-mini", messages=HELLO)
        assert info.value.response.json()["error"]["type"] == "model_not_allowed"
    # rpm = 6 is cluster-wide. The limiter runs first (SPEC §4 order), so the four refused
    # calls above already took four of the six: two more are admitted across both replicas.
    admitted = 0
    refused: list[openai.RateLimitError] = []
    for i in range(6):
        gw = (a, b)[i % 2]
        try:
            gw.openai().chat.completions.create(model="gpt-4o", messages=HELLO)
            admitted += 1
        except openai.RateLimitError as exc:
            refused.append(exc)
    assert admitted == 2
    assert len(refused) == 4
    for exc in refused:
        assert exc.response.headers["x-langwatch-ratelimit-dimension"] == "rpm"
        assert int(exc.response.headers["retry-after"]) >= 1
        assert "x-langwatch-provider" not in exc.response.headers
