"""The Gemini adapter end to end: the official openai and anthropic SDKs → the gateway
(subprocess) → the provider simulator's Gemini wire (subprocess)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
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

MODEL = "gemini-2.5-flash"
UPSTREAM_KEY = "gm-upstream-key"
HELLO = [{"role": "user", "content": "Say hello to the Gemini lane"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
        },
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER["function"]["parameters"],
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-an-image").decode()


#: A gateway in front of the simulator (Gemini, OpenAI and Anthropic providers) and two
#: failing simulators (500 and 429) whose Gemini providers fall back to OpenAI.
Stack = SimulatedGateway


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sim = start_simulator()
    down_500 = start_simulator("--fault", "500")
    # Retry-After: 60 — the gateway cools that credential down for the rest of the module.
    down_429 = start_simulator("--fault", "429:60")
    providers = [
        {"name": "sim-gemini", "type": "gemini", "base_url": sim.url, "api_key": UPSTREAM_KEY},
        {
            "name": "gemini-500",
            "type": "gemini",
            "base_url": down_500.url,
            "api_key": UPSTREAM_KEY,
            "models": ["flaky-500"],
        },
        {
            "name": "gemini-429",
            "type": "gemini",
            "base_url": down_429.url,
            "api_key": UPSTREAM_KEY,
            "models": ["flaky-429"],
        },
        *default_providers(sim.url),
        {
            "name": "openai-backup",
            "type": "openai",
            "base_url": f"{sim.url}/v1",
            "api_key": "sk-backup",
            "models": ["flaky-500", "flaky-429"],
            "priority": 5,
        },
    ]
    stack = start_simulated_gateway(
        tmp_path_factory.mktemp("gemini-e2e"), sim, down_500, down_429, providers=providers
    )
    yield stack
    stack.stop_all()


# --------------------------------------------------------------------------- chat clients


def test_chat_non_stream_reaches_gemini_with_its_key(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        max_tokens=200,
        temperature=0.3,
    )
    completion = raw.parse()
    upstream = stack.upstream()
    choice = completion.choices[0]
    assert choice.message.content == (
        "Hello from the Tollway simulator. You said: Say hello to the Gemini lane"
    )
    assert choice.finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 13
    assert raw.headers["x-langwatch-provider"] == "gemini"
    assert raw.headers["x-langwatch-model"] == MODEL
    assert "x-langwatch-params-dropped" not in raw.headers
    assert upstream["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert upstream["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    assert "authorization" not in upstream["headers"]
    assert stack.key not in json.dumps(upstream["headers"])
    assert upstream["json"] == {
        "contents": [{"role": "user", "parts": [{"text": HELLO[0]["content"]}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 200, "temperature": 0.3},
    }


def test_chat_stream_matches_non_stream_with_usage_when_asked(stack: Stack) -> None:
    client = stack.openai()
    plain = client.chat.completions.create(model=MODEL, messages=HELLO)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    upstream = stack.upstream()
    assert upstream["path"] == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert upstream["query_string"] == "alt=sse"
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
    bare = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert all(c.choices for c in bare) and all(c.usage is None for c in bare)


def test_chat_tool_call_then_result(stack: Stack) -> None:
    client = stack.openai()
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    with client.chat.completions.stream(model=MODEL, messages=messages, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "example", "days": 1}
    sent = stack.upstream()["json"]
    # JSON schema → Gemini's OpenAPI subset: upper-case types, no additionalProperties.
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}},
                        "required": ["city", "days"],
                    },
                }
            ]
        }
    ]
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="auto"
    )
    assert answer.choices[0].message.content.endswith("Received the tool result.")  # type: ignore[union-attr]
    assert answer.choices[0].finish_reason == "stop"
    sent = stack.upstream()["json"]
    assert sent["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "example", "days": 1}}}
        ],
    }
    assert sent["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}],
    }
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


def test_chat_parallel_tool_calls(stack: Stack) -> None:
    client = stack.openai()
    headers = {"x-simulator-tool": "get_weather,get_time"}
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, tools=[WEATHER, CLOCK], extra_headers=headers
    )
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2  # type: ignore[union-attr]
    assert orjson.loads(calls[1].function.arguments) == {"zone": "UTC"}  # type: ignore[index]
    with client.chat.completions.stream(
        model=MODEL, messages=HELLO, tools=[WEATHER, CLOCK], extra_headers=headers
    ) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls or []
    assert [c.function.name for c in streamed] == ["get_weather", "get_time"]
    assert final.choices[0].finish_reason == "tool_calls"


def test_chat_forced_tool_choice_names_the_function(stack: Stack) -> None:
    stack.openai().chat.completions.create(
        model=MODEL,
        messages=HELLO,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert stack.upstream()["json"]["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
    }


def test_chat_max_tokens_is_length(stack: Stack) -> None:
    reply = stack.openai().chat.completions.create(
        model=MODEL, messages=HELLO, max_completion_tokens=3
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_thinking_model_reports_reasoning_tokens(stack: Stack) -> None:
    reply = stack.openai().chat.completions.create(model="gemini-2.5-pro", messages=HELLO)
    usage = reply.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 8
    # OpenAI counts reasoning inside completion tokens; so do we (13 words + 8 thoughts).
    assert usage.completion_tokens == 21
    assert usage.total_tokens == usage.prompt_tokens + 21


def test_dropped_parameters_are_listed_and_the_rest_mapped(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=HELLO,
        max_completion_tokens=50,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        top_p=0.9,
        stop=["END"],
        logit_bias={"50256": -100},
        user="end-user-7",
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"answer": {"type": ["string", "null"]}},
                    "required": ["answer"],
                    "additionalProperties": False,
                },
            },
        },
    )
    assert raw.headers["x-langwatch-params-dropped"].split(",") == ["logit_bias", "user"]
    config = stack.upstream()["json"]["generationConfig"]
    assert config == {
        "maxOutputTokens": 50,
        "topP": 0.9,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.25,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"answer": {"type": "STRING", "nullable": True}},
            "required": ["answer"],
        },
    }


def test_images_become_inline_data(stack: Stack) -> None:
    stack.openai().chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
    )
    parts = stack.upstream()["json"]["contents"][0]["parts"]
    assert parts == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
    ]


def test_upstream_error_passes_through_in_googles_shape(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.openai().chat.completions.create(
            model=MODEL, messages=HELLO, extra_headers={"x-simulator-fault": "400"}
        )
    assert info.value.response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert info.value.response.headers["x-langwatch-provider"] == "gemini"


def test_mid_stream_failure_raises_in_the_openai_sdk(stack: Stack) -> None:
    stream = stack.openai().chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, extra_headers={"x-simulator-fault": "midstream:3"}
    )
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received


@pytest.mark.parametrize("model", ["flaky-500", "flaky-429"])
def test_failing_gemini_falls_back_to_openai(stack: Stack, model: str) -> None:
    for stream in (False, True):
        resp = httpx.post(
            f"{stack.url}/v1/chat/completions",
            json={"model": model, "messages": HELLO, "stream": stream},
            headers={"authorization": f"Bearer {stack.key}"},
            timeout=20,
        )
        assert resp.status_code == 200, resp.text
        # A 429's Retry-After cools the credential down: the next call skips it without asking
        # it, and a provider skipped unasked is no fallback (as with an open breaker).
        skipped = model == "flaky-429" and stream
        assert resp.headers["x-langwatch-fallback-count"] == ("0" if skipped else "1")
        assert resp.headers["x-langwatch-provider"] == "openai"
        upstream = stack.upstream()
        assert upstream["path"] == "/v1/chat/completions"


def test_models_lists_the_gemini_models(stack: Stack) -> None:
    ids = {m.id for m in stack.openai().models.list()}
    assert {"gemini-2.5-flash", "gemini-2.5-pro", "flaky-500"} <= ids


# --------------------------------------------------------------------------- messages clients


def test_messages_non_stream_and_stream(stack: Stack) -> None:
    client = stack.anthropic()
    message = client.messages.create(
        model=MODEL, max_tokens=200, system="Be brief.", messages=HELLO
    )
    upstream = stack.upstream()
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Hello from the Tollway simulator.")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 13
    assert upstream["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert upstream["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    assert "x-api-key" not in upstream["headers"]
    assert "anthropic-version" not in upstream["headers"]
    assert upstream["json"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    with client.messages.stream(model=MODEL, max_tokens=200, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == message.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 13 and final.usage.input_tokens > 0


def test_messages_stream_events_all_carry_a_name(stack: Stack) -> None:
    resp = httpx.post(
        f"{stack.url}/v1/messages",
        json={"model": MODEL, "max_tokens": 100, "messages": HELLO, "stream": True},
        headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert resp.status_code == 200
    blocks = [b for b in resp.text.split("\n\n") if b.strip()]
    assert blocks and all(b.startswith("event: ") for b in blocks)
    assert blocks[-1].startswith("event: message_stop")


def test_messages_tool_use_round_trip_and_parallel(stack: Stack) -> None:
    client = stack.anthropic()
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    reply = client.messages.create(
        model=MODEL, max_tokens=300, messages=ask, tools=[WEATHER_ANTHROPIC]
    )
    assert reply.stop_reason == "tool_use"
    use = next(b for b in reply.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "example", "days": 1}
    follow = [
        *ask,
        {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
        },
    ]
    done = client.messages.create(
        model=MODEL, max_tokens=300, messages=follow, tools=[WEATHER_ANTHROPIC]
    )
    assert done.stop_reason == "end_turn"
    assert done.content[0].text.endswith("Received the tool result.")  # type: ignore[union-attr]
    clock = {"name": "get_time", "input_schema": CLOCK["function"]["parameters"]}
    with client.messages.stream(
        model=MODEL,
        max_tokens=300,
        messages=ask,
        tools=[WEATHER_ANTHROPIC, clock],
        extra_headers={"x-simulator-tool": "get_weather,get_time"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [
        ("get_weather", {"city": "example", "days": 1}),
        ("get_time", {"zone": "UTC"}),
    ]


def test_messages_max_tokens_and_top_k(stack: Stack) -> None:
    raw = stack.anthropic().messages.with_raw_response.create(
        model=MODEL, max_tokens=3, messages=HELLO, extra_body={"top_k": 20}
    )
    message = raw.parse()
    assert message.stop_reason == "max_tokens"
    assert "x-langwatch-params-dropped" not in raw.headers
    assert stack.upstream()["json"]["generationConfig"] == {"maxOutputTokens": 3, "topK": 20}


def test_messages_upstream_error_raises_in_the_anthropic_sdk(stack: Stack) -> None:
    with pytest.raises(anthropic.InternalServerError):
        stack.anthropic().messages.create(
            model=MODEL,
            max_tokens=20,
            messages=HELLO,
            extra_headers={"x-simulator-fault": "500"},
        )
