"""The evaluator on its own, then behind a real gateway (simulator upstream, openai SDK)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest
from tollway_block_words import BlockWordsEvaluator

from tollway.guardrails import GuardrailRequest
from tollway_conformance.harness import GatewayProcess, Simulator

WORDS = {"evaluator": "block-words", "words": ["project zebra", "internal-only"]}


def judge(direction: str, content: dict[str, Any]) -> Any:
    request = GuardrailRequest(direction=direction, content=content, settings=WORDS)  # type: ignore[arg-type]
    return asyncio.run(BlockWordsEvaluator().evaluate(request))


def test_blocks_a_word_in_the_request() -> None:
    verdict = judge("pre", {"messages": [{"role": "user", "content": "About PROJECT ZEBRA…"}]})
    assert verdict.decision == "block"
    assert "PROJECT ZEBRA" in verdict.reason


def test_whole_words_only() -> None:
    verdict = judge("pre", {"messages": [{"role": "user", "content": "project zebras"}]})
    assert verdict.decision == "allow"


def test_blocks_a_word_in_the_answer_and_in_a_chunk() -> None:
    answer = {"output": "it is internal-only", "outputs": ["it is internal-only"]}
    assert judge("post", answer).decision == "block"
    chunk = {"delta": "internal-only", "deltas": ["internal-", "only"]}
    assert judge("stream_chunk", chunk).decision == "block"


def test_settings_are_validated() -> None:
    evaluator = BlockWordsEvaluator()
    assert evaluator.validate_settings(WORDS) == []
    assert evaluator.validate_settings({"evaluator": "block-words"})
    assert evaluator.validate_settings({"evaluator": "block-words", "words": ["x"], "wrods": 1})


@pytest.fixture
def gateway(
    tollway_simulator: Simulator, tollway_gateway_factory: Callable[..., GatewayProcess]
) -> GatewayProcess:
    return tollway_gateway_factory(
        f"""
[[providers]]
name = "sim"
type = "openai"
base_url = "{tollway_simulator.url}/v1"
api_key = "sk-simulated"
""",
        key_config={"guardrails": {"pre": [WORDS], "post": [WORDS]}},
        plugins=[
            "tollway-provider-openai",
            "tollway-static-keys",
            "tollway-guardrails",
            "tollway-block-words",
        ],
    )


def test_blocked_request_gets_403(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        gateway.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "status of Project Zebra?"}],
        )
    error = info.value.response.json()["error"]
    assert error["type"] == "guardrail_blocked"
    assert "Project Zebra" in error["message"]


def test_clean_request_passes(gateway: GatewayProcess) -> None:
    reply = gateway.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content
