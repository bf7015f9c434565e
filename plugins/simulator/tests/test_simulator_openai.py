"""The simulator's OpenAI wire (chat completions, responses, embeddings, models) driven by the
official openai SDK, and Codex's recorded requests."""

from __future__ import annotations

import base64
import json

import anthropic
import httpx2
import openai
from simulator_helpers import (
    DATA,
    TIME_TOOL,
    USER,
    WEATHER_ARGS,
    WEATHER_TOOL,
    _send_recorded,
    _sse,
)

from tollway_simulator.common import GREETING

pytest_plugins = ["simulator_fixtures"]

# --------------------------------------------------------------------------- chat completions


def test_chat_non_stream(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="gpt-4o", messages=USER)
    second = oai.chat.completions.create(model="gpt-4o", messages=USER)
    text = first.choices[0].message.content
    assert text == f"{GREETING} You said: Please say hello to the gateway"
    assert second.choices[0].message.content == text
    assert first.object == "chat.completion"
    assert first.model == "gpt-4o"
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None and first.usage.prompt_tokens > 0
    assert first.usage.completion_tokens == len(text.split())


def test_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(contents) > 3
    assert "".join(contents).startswith(GREETING)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(contents)


def test_chat_stream_without_usage_and_max_tokens(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(model="gpt-4o", messages=USER, stream=True, max_tokens=3)
    )
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from the"


def test_chat_tools(oai: openai.OpenAI) -> None:
    done = oai.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL, TIME_TOOL]
    )
    call = done.choices[0].message.tool_calls[0]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS

    picked = oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[WEATHER_TOOL, TIME_TOOL],
        extra_headers={"x-simulator-tool": "get_time"},
    )
    args = json.loads(picked.choices[0].message.tool_calls[0].function.arguments)
    assert args == {"zone": "example", "offset": 1}

    followup = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = oai.chat.completions.create(model="gpt-4o", messages=followup, tools=[WEATHER_TOOL])
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content.startswith(GREETING)


def test_chat_tools_stream_helper(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls"
    assert call.function.parsed_arguments == WEATHER_ARGS


# --------------------------------------------------------------------------- responses


def test_responses_non_stream(oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model="gpt-5", input="Tell me a joke")
    assert resp.status == "completed"
    assert resp.output_text == f"{GREETING} You said: Tell me a joke"
    assert resp.usage is not None
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0


def test_responses_stream(oai: openai.OpenAI) -> None:
    with oai.responses.stream(
        model="gpt-5", input="Tell me a joke", reasoning={"effort": "low"}
    ) as s:
        events = list(s)
        final = s.get_final_response()
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert expected in types
    assert types.count("response.output_text.delta") > 3
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text.startswith(GREETING)
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens > 0
    assert final.output[0].type == "reasoning"


def test_responses_raw_sse_has_event_lines(url: str) -> None:
    body = {"model": "gpt-5", "input": "hi", "stream": True}
    raw = httpx2.post(f"{url}/v1/responses", json=body).content.decode()
    blocks = [b for b in raw.split("\n\n") if b]
    for n, block in enumerate(blocks):
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
        assert data["sequence_number"] == n


def test_responses_tools(oai: openai.OpenAI) -> None:
    fn = {
        "type": "function",
        "name": "exec_command",
        "parameters": {
            "type": "object",
            "properties": {"cmd": {"type": "string"}},
            "required": ["cmd"],
        },
        "strict": False,
    }
    custom = {"type": "custom", "name": "apply_patch", "description": "patch"}
    with oai.responses.stream(model="gpt-5", input="run ls", tools=[fn, custom]) as s:
        final = s.get_final_response()
    item = final.output[-1]
    assert item.type == "function_call" and item.name == "exec_command"
    assert json.loads(item.arguments) == {"cmd": "echo ok"}  # a shell tool: a harmless command

    shell_first = oai.responses.create(model="gpt-5", input="patch it", tools=[custom, fn])
    assert shell_first.output[-1].name == "exec_command"  # a shell tool wins over the first tool

    custom_resp = oai.responses.create(model="gpt-5", input="patch it", tools=[custom])
    assert custom_resp.output[-1].type == "custom_tool_call"
    assert custom_resp.output[-1].input == "example"

    with oai.responses.stream(model="gpt-5", input="patch", tools=[custom]) as s:
        streamed = s.get_final_response()
    assert streamed.output[-1].type == "custom_tool_call"

    after = oai.responses.create(
        model="gpt-5",
        tools=[fn],
        input=[
            {"role": "user", "content": "run ls"},
            {
                "type": "function_call",
                "call_id": item.call_id,
                "name": item.name,
                "arguments": item.arguments,
            },
            {"type": "function_call_output", "call_id": item.call_id, "output": "a b c"},
        ],
    )
    assert after.output_text.startswith(GREETING)


def test_openai_cached_tokens(oai: openai.OpenAI) -> None:
    long_system = {"role": "system", "content": "You are a careful assistant. " * 300}
    first = oai.chat.completions.create(model="gpt-4o", messages=[long_system, *USER])
    assert first.usage is not None and first.usage.prompt_tokens >= 1024
    followup = [long_system, *USER, {"role": "assistant", "content": "hi"}, *USER]
    second = oai.chat.completions.create(model="gpt-4o", messages=followup)
    assert second.usage is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0


# --------------------------------------------------------------------------- embeddings, models


def test_embeddings(oai: openai.OpenAI) -> None:
    default = oai.embeddings.create(model="text-embedding-3-small", input="hello")  # base64
    vec = default.data[0].embedding
    assert len(vec) == 8
    assert abs(sum(v * v for v in vec) - 1.0) < 1e-5
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    assert floats.data[0].embedding == vec
    many = oai.embeddings.create(
        model="text-embedding-3-small", input=["a", "b", "hello"], dimensions=16
    )
    assert [d.index for d in many.data] == [0, 1, 2]
    assert all(len(d.embedding) == 16 for d in many.data)
    assert many.data[0].embedding != many.data[1].embedding
    assert many.usage.prompt_tokens > 0


def test_embeddings_base64_wire(url: str) -> None:
    body = {"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"}
    data = httpx2.post(f"{url}/v1/embeddings", json=body).json()
    raw = base64.b64decode(data["data"][0]["embedding"])
    assert len(raw) == 8 * 4


def test_models(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"gpt-4o", "gpt-4o-mini", "gpt-5", "text-embedding-3-small"} <= ids
    assert {"claude-sonnet-4-5", "claude-haiku-4-5"} <= ids
    assert oai.models.retrieve("gpt-4o").id == "gpt-4o"
    assert "claude-haiku-4-5" in {m.id for m in ant.models.list()}


# --------------------------------------------------------------------------- real client requests


def test_codex_turns(url: str) -> None:
    httpx2.post(f"{url}/_sim/reset")
    first, second = json.loads((DATA / "codex-0.169.0-responses-tool.json").read_text())
    events = _sse(_send_recorded(url, first).text)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    done = [d["item"] for _, d in events if d["type"] == "response.output_item.done"]
    assert done[-1]["type"] == "custom_tool_call" and done[-1]["name"] == "exec"  # additional_tools
    assert done[-1]["input"] == 'text("ok")'  # Codex's exec takes JavaScript
    usage = events[-1][1]["response"]["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert "reasoning_tokens" in usage["output_tokens_details"]

    events = _sse(_send_recorded(url, second).text)  # ends with custom_tool_call_output
    done = [d["item"] for _, d in events if d["type"] == "response.output_item.done"]
    assert done[-1]["type"] == "message"
    assert events[-1][1]["type"] == "response.completed"
    assert events[-1][1]["response"]["usage"]["input_tokens_details"]["cached_tokens"] > 0
