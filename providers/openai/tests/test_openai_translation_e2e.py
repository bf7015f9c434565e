"""Anthropic clients on an OpenAI provider, end to end: the official anthropic SDK → the gateway
(subprocess) → the provider simulator's OpenAI chat wire (subprocess)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tollway.testing import (
    SimulatedGateway,
    default_providers,
    start_simulated_gateway,
    start_simulator,
)

MODEL = "gpt-4o"
HELLO = [{"role": "user", "content": "Say hello to the translated lane"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-an-image").decode()


# --------------------------------------------------------------------------- processes


#: A gateway (one static key) in front of the simulator, with an OpenAI and an Anthropic
#: provider; ``upstream()`` is the simulator's last request.
Stack = SimulatedGateway


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sim = start_simulator()
    stack = start_simulated_gateway(
        tmp_path_factory.mktemp("translation-openai"), sim, providers=default_providers(sim.url)
    )
    yield stack
    stack.stop_all()


# --------------------------------------------------------------------------- tests


def test_non_stream_answer_matches_the_openai_wire(stack: Stack) -> None:
    raw = stack.anthropic().messages.with_raw_response.create(
        model=MODEL, max_tokens=200, system="Be brief.", messages=HELLO
    )
    message = raw.parse()
    upstream = stack.upstream()
    native = stack.openai().chat.completions.create(
        model=MODEL,
        max_completion_tokens=200,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == native.choices[0].message.content
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens == native.usage.completion_tokens  # type: ignore[union-attr]
    assert raw.headers["x-langwatch-provider"] == "openai"
    assert "x-langwatch-params-dropped" not in raw.headers
    # What reached OpenAI: its own wire and credential, no Anthropic headers.
    assert upstream["path"] == "/v1/chat/completions"
    assert upstream["headers"]["authorization"] == "Bearer sk-upstream-openai"
    assert not any(h.startswith("anthropic-") for h in upstream["headers"])
    assert stack.key not in str(upstream["headers"])
    assert upstream["json"]["messages"] == [{"role": "system", "content": "Be brief."}, *HELLO]
    assert upstream["json"]["max_completion_tokens"] == 200


def test_stream_helper_text_usage_and_stop_reason(stack: Stack) -> None:
    client = stack.anthropic()
    plain = client.messages.create(model=MODEL, max_tokens=200, messages=HELLO)
    with client.messages.stream(model=MODEL, max_tokens=200, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0  # arrives in message_delta
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert stack.upstream()["json"]["stream_options"] == {"include_usage": True}


def test_every_event_is_named(stack: Stack) -> None:
    r = httpx.post(
        f"{stack.url}/v1/messages",
        json={"model": MODEL, "max_tokens": 50, "messages": HELLO, "stream": True},
        headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"},
    )
    blocks = [b for b in r.content.split(b"\n\n") if b.strip()]
    assert blocks and all(b.startswith(b"event: ") for b in blocks)
    names = [b.split(b"\n")[0][7:].decode() for b in blocks]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "x-langwatch-params-dropped" not in r.headers


def test_tool_use_stream_and_result_round_trip(stack: Stack) -> None:
    client = stack.anthropic()
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    with client.messages.stream(
        model=MODEL, max_tokens=300, messages=messages, tools=[WEATHER]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_use = final.content[-1]
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    assert tool_use.input == {"city": "example", "days": 1}
    sent = stack.upstream()["json"]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    # The result goes back as a tool message; the answer comes back as text.
    messages.append({"role": "assistant", "content": [b.model_dump() for b in final.content]})
    messages.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}],
        }
    )
    answer = client.messages.create(model=MODEL, max_tokens=300, messages=messages, tools=[WEATHER])
    assert answer.content[0].text.endswith("Received the tool result.")  # type: ignore[union-attr]
    assert answer.stop_reason == "end_turn"
    sent_messages = stack.upstream()["json"]["messages"]
    assert sent_messages[1]["tool_calls"][0]["id"] == tool_use.id
    assert sent_messages[2] == {"role": "tool", "tool_call_id": tool_use.id, "content": "sunny"}


def test_non_stream_tool_use_and_max_tokens_stop(stack: Stack) -> None:
    client = stack.anthropic()
    message = client.messages.create(
        model=MODEL,
        max_tokens=300,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    assert message.content[-1].input == {"city": "example", "days": 1}  # type: ignore[union-attr]
    assert stack.upstream()["json"]["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    short = client.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    assert short.stop_reason == "max_tokens"


def test_dropped_parameters_are_listed(stack: Stack) -> None:
    raw = stack.anthropic().messages.with_raw_response.create(
        model=MODEL,
        max_tokens=50,
        messages=HELLO,
        # anthropic SDK 2.x has no sampling parameters any more; older clients still send them.
        extra_body={"top_k": 5, "temperature": 0.3},
        metadata={"user_id": "end-user-7"},
        system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        stop_sequences=["STOP"],
    )
    assert sorted(raw.headers["x-langwatch-params-dropped"].split(",")) == [
        "cache_control",
        "top_k",
    ]
    sent = stack.upstream()["json"]
    assert sent["temperature"] == 0.3 and sent["user"] == "end-user-7" and sent["stop"] == ["STOP"]
    assert "top_k" not in sent


def test_reasoning_models_lose_sampling_parameters(stack: Stack) -> None:
    raw = stack.anthropic().messages.with_raw_response.create(
        model="gpt-5",
        max_tokens=50,
        messages=HELLO,
        stop_sequences=["x"],
        extra_body={"temperature": 0.3},
    )
    assert sorted(raw.headers["x-langwatch-params-dropped"].split(",")) == [
        "stop_sequences",
        "temperature",
    ]
    sent = stack.upstream()["json"]
    assert "temperature" not in sent and "stop" not in sent


def test_mid_stream_failure_raises_in_the_anthropic_sdk(stack: Stack) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        stack.anthropic().messages.stream(
            model=MODEL,
            max_tokens=256,
            messages=HELLO,
            extra_headers={"x-simulator-fault": "midstream:4"},
        ) as stream,
    ):
        for _ in stream:
            pass
    assert "mid-stream" in str(info.value)


def test_legacy_key_header_and_claude_code_query_string(stack: Stack) -> None:
    r = httpx.post(
        f"{stack.url}/v1/messages?beta=true",
        json={"model": MODEL, "max_tokens": 20, "messages": HELLO},
        headers={
            "x-api-key": stack.key,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "context-management-2025-06-27",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "message"
    upstream = stack.upstream()
    assert upstream["query_string"] == ""
    assert "anthropic-beta" not in upstream["headers"]


def test_recorded_openai_stream_reaches_the_sdk(stack: Stack) -> None:
    with stack.anthropic().messages.stream(
        model=MODEL,
        max_tokens=300,
        messages=HELLO,
        extra_headers={"x-simulator-replay": "openai-chat/one-tool-call.sse"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].input == {"city": "Edinburgh", "country": "UK", "units": "c"}  # type: ignore[union-attr]
