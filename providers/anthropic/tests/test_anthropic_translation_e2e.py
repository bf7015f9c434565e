"""OpenAI chat clients on an Anthropic provider, end to end: the official openai SDK → the
gateway (subprocess) → the provider simulator's Anthropic wire (subprocess)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tollway.testing import (
    SimulatedGateway,
    default_providers,
    start_simulated_gateway,
    start_simulator,
)

MODEL = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Say hello to the translated lane"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
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
        tmp_path_factory.mktemp("translation-anthropic"), sim, providers=default_providers(sim.url)
    )
    yield stack
    stack.stop_all()


# --------------------------------------------------------------------------- tests


def test_non_stream_answer_matches_the_anthropic_wire(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        max_tokens=200,
    )
    completion = raw.parse()
    upstream = stack.upstream()
    native = stack.anthropic().messages.create(
        model=MODEL, max_tokens=200, system="Be brief.", messages=HELLO
    )
    assert completion.choices[0].message.content == native.content[0].text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL  # the model that answered
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == native.usage.output_tokens
    assert raw.headers["x-langwatch-provider"] == "anthropic"
    assert "x-langwatch-params-dropped" not in raw.headers
    # What reached Anthropic: its own wire, its own credential.
    assert upstream["path"] == "/v1/messages"
    assert upstream["headers"]["x-api-key"] == "sk-ant-upstream"
    assert upstream["headers"]["anthropic-version"]
    assert stack.key not in str(upstream["headers"])
    assert upstream["json"]["system"] == [{"type": "text", "text": "Be brief."}]
    assert upstream["json"]["max_tokens"] == 200
    assert upstream["json"]["messages"] == HELLO


def test_stream_matches_non_stream_with_usage_when_asked(stack: Stack) -> None:
    client = stack.openai()
    plain = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=200)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=200,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    assert chunks[-1].usage.prompt_tokens > 0
    # Without include_usage: no usage chunk.
    bare = list(
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=200, stream=True)
    )
    assert all(c.choices for c in bare) and all(c.usage is None for c in bare)


def test_tool_call_through_the_stream_helper_then_the_result(stack: Stack) -> None:
    client = stack.openai()
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    with client.chat.completions.stream(
        model=MODEL, messages=messages, tools=[WEATHER], max_tokens=300
    ) as stream:
        deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "example", "days": 1}
    assert deltas, "arguments arrived as deltas"
    upstream = stack.upstream()["json"]
    assert upstream["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    # Send the result back (non-streaming): a tool_result block reaches Anthropic.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], max_tokens=300
    )
    assert answer.choices[0].message.content.endswith("Received the tool result.")  # type: ignore[union-attr]
    sent = stack.upstream()["json"]["messages"]
    assert sent[1]["content"][-1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": {"city": "example", "days": 1},
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
    }


def test_missing_max_tokens_gets_the_default_and_says_so(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    assert raw.parse().choices[0].message.content
    used = int(raw.headers["x-langwatch-default-max-tokens"])
    assert used == stack.upstream()["json"]["max_tokens"]
    assert 0 < used <= 4096  # [routing] default_max_tokens caps it


def test_dropped_parameters_are_listed(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=HELLO,
        max_completion_tokens=50,
        seed=1,
        presence_penalty=0.5,
        logit_bias={"50256": -100},
        n=1,
        temperature=0.2,
        top_p=0.9,  # Haiku 4.5 refuses temperature and top_p together
        user="end-user-7",
    )
    dropped = raw.headers["x-langwatch-params-dropped"].split(",")
    assert sorted(dropped) == ["logit_bias", "presence_penalty", "seed", "top_p"]
    sent = stack.upstream()["json"]
    assert sent["temperature"] == 0.2 and "top_p" not in sent and "seed" not in sent
    assert sent["metadata"] == {"user_id": "end-user-7"}
    assert sent["max_tokens"] == 50


def test_images_become_image_blocks(stack: Stack) -> None:
    stack.openai().chat.completions.create(
        model=MODEL,
        max_tokens=20,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}},
                ],
            }
        ],
    )
    content = stack.upstream()["json"]["messages"][0]["content"]
    assert content[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert content[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://img.example/cat.png"},
    }


def test_mid_stream_failure_raises_in_the_openai_sdk(stack: Stack) -> None:
    stream = stack.openai().chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=200,
        stream=True,
        extra_headers={"x-simulator-fault": "midstream:5"},
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received, "what arrived before the failure reaches the client"
    assert "mid-stream" in str(info.value)


def test_upstream_errors_pass_through(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        stack.openai().chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=20,
            extra_headers={"x-simulator-fault": "500"},
        )
    assert info.value.response.json()["type"] == "error"  # Anthropic's own error body
    assert info.value.response.headers["x-langwatch-provider"] == "anthropic"


def test_recorded_anthropic_stream_reaches_the_sdk(stack: Stack) -> None:
    chunks = list(
        stack.openai().chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=20,
            stream=True,
            extra_headers={"x-simulator-replay": "anthropic-messages/basic_response.sse"},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there!"


def test_native_lane_is_untouched(stack: Stack) -> None:
    body = orjson.dumps(
        {"model": MODEL, "max_tokens": 20, "messages": HELLO, "top_k": 3, "temperature": 0.1}
    )
    r = httpx.post(
        f"{stack.url}/v1/messages",
        content=body,
        headers={"x-api-key": stack.key, "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert "x-langwatch-params-dropped" not in r.headers
    assert base64.b64decode(stack.upstream()["body"]) == body
