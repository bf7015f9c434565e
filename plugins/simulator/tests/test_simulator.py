"""The simulator driven by the official openai and anthropic SDKs, in a subprocess."""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import anthropic
import click
import httpx2
import openai
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway_simulator import plugin
from tollway_simulator.cli import simulate
from tollway_simulator.common import (
    GREETING,
    custom_tool_input,
    example_for_schema,
    prefer_shell_tool,
    reply_words,
    tool_arguments,
)
from tollway_simulator.faults import Fault, parse_fault
from tollway_simulator.fixtures import read_fixture, split_events

STARTUP_TIMEOUT_S = 20


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway_simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        proc.kill()
        raise AssertionError("simulator printed no listening line") from None
    prefix = "tollway-simulator listening on "
    if not line.startswith(prefix):
        _stop(proc)
        raise AssertionError(f"unexpected first line {line!r}")
    return proc, line[len(prefix) :].strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    proc, base_url = _start()
    try:
        yield base_url
    finally:
        _stop(proc)


@pytest.fixture
def oai(url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-key", max_retries=0, timeout=10)
    yield client
    client.close()


@pytest.fixture
def ant(url: str) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0, timeout=10)
    yield client
    client.close()


def _stats(url: str) -> dict[str, int]:
    return httpx2.get(f"{url}/_sim/stats").json()


def _fault(value: str) -> dict[str, str]:
    return {"x-simulator-fault": value}


USER = [{"role": "user", "content": "Please say hello to the gateway"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "days", "metric", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}, "offset": {"type": "number"}},
            "required": ["zone", "offset"],
        },
    },
}
WEATHER_ARGS = {"city": "example", "days": 1, "metric": True, "unit": "c"}


# --------------------------------------------------------------------------- CLI and plugin


def test_cli_help_and_bad_fault() -> None:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--latency-ms", "--event-delay-ms", "--fault"):
        assert option in result.output
    bad = CliRunner().invoke(simulate, ["--fault", "explode"])
    assert bad.exit_code == 2
    assert "unknown fault" in bad.output


def test_plugin_registers_simulate() -> None:
    group = click.Group("tollway")
    plugin.register_commands(group)
    assert group.commands["simulate"] is simulate
    eps = metadata.entry_points(group="tollway")
    assert any(
        ep.name == "tollway-simulator" and ep.value == "tollway_simulator.plugin" for ep in eps
    )


def test_parse_fault() -> None:
    assert parse_fault("503") == Fault("status", 503)
    assert parse_fault("midstream") == Fault("midstream", 3)
    assert parse_fault("midstream:7") == Fault("midstream", 7)
    assert parse_fault("slow-first-byte") == Fault("slow-first-byte", 2000)
    assert parse_fault("slow-first-byte:50") == Fault("slow-first-byte", 50)
    for spec in ("timeout", "reset", "html", "malformed-sse"):
        assert str(parse_fault(spec)) == spec
    for bad in ("200", "600", "midstream:x", "nope", "timeout:3"):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_schema_examples() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "a": {"type": "array", "items": {"type": "integer"}},
            "o": {
                "type": "object",
                "properties": {"x": {"type": ["null", "string"]}},
                "required": ["x"],
            },
            "u": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            "optional": {"type": "string"},
        },
        "required": ["s", "n", "b", "a", "o", "u"],
    }
    assert example_for_schema(schema) == {
        "s": "example",
        "n": 1,
        "b": True,
        "a": [1],
        "o": {"x": "example"},
        "u": 1,
    }


def test_shell_tool_preference_and_arguments() -> None:
    schema = {
        "type": "object",
        "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
        "required": ["command"],
    }
    tools = [{"name": "Agent"}, {"name": "Read"}, {"name": "Bash"}]
    assert prefer_shell_tool(tools)["name"] == "Bash"
    assert prefer_shell_tool([{"name": "Agent"}, {"name": "Read"}])["name"] == "Agent"
    assert tool_arguments("Bash", schema) == {"command": "echo ok"}
    assert tool_arguments("Other", schema) == {"command": "example"}
    argv = {"type": "object", "properties": {"command": {"type": "array", "items": {}}}}
    assert tool_arguments("shell", argv) == {"command": ["bash", "-lc", "echo ok"]}
    cmd = {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
    assert tool_arguments("exec_command", cmd) == {"cmd": "echo ok"}
    assert custom_tool_input("exec") == 'text("ok")'
    assert custom_tool_input("apply_patch") == "example"


@settings(database=None, deadline=None)
@given(st.text(max_size=200), st.one_of(st.none(), st.integers(1, 300)))
def test_reply_words_deterministic(text: str, words: int | None) -> None:
    first = reply_words(text, output_words=words)
    assert first == reply_words(text, output_words=words)
    joined = "".join(first)
    assert joined.startswith("Hello")
    if words is None:
        assert joined.startswith(GREETING)
    else:
        assert len(first) == words


@settings(database=None, deadline=None)
@given(st.lists(st.text(alphabet="abc: \n", max_size=20), max_size=8))
def test_split_events_keeps_bytes(parts: list[str]) -> None:
    data = "\n\n".join(parts).encode()
    events = split_events(data)
    assert b"".join(events).startswith(data)
    assert all(e.endswith(b"\n\n") for e in events)


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


# --------------------------------------------------------------------------- messages


SYSTEM_BLOCKS = [
    {"type": "text", "text": "You are a helpful agent. " * 40},
    {"type": "text", "text": "Follow the rules. " * 200, "cache_control": {"type": "ephemeral"}},
]


def test_messages_non_stream(ant: anthropic.Anthropic) -> None:
    msg = ant.messages.create(
        model="claude-haiku-4-5",
        max_tokens=1024,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello Claude"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].text == f"{GREETING} You said: Hello Claude"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_messages_stream_claude_code_shape(url: str, ant: anthropic.Anthropic) -> None:
    # Claude Code: ?beta=true, a system block list, and a role "system" message in messages.
    with ant.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=32000,
        system=SYSTEM_BLOCKS,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is up?"}]},
            {"role": "system", "content": [{"type": "text", "text": "extra"}]},  # type: ignore[list-item]
        ],
        extra_query={"beta": "true"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"{GREETING} You said: What is up?"
    assert final.stop_reason == "end_turn"
    raw = httpx2.post(
        f"{url}/v1/messages?beta=true",
        json={"model": "m", "max_tokens": 5, "stream": True, "messages": USER},
    ).text
    names = [line.split(": ", 1)[1] for line in raw.split("\n") if line.startswith("event: ")]
    data_lines = [line for line in raw.split("\n") if line.startswith("data: ")]
    assert len(names) == len(data_lines)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert {"ping", "content_block_start", "content_block_delta", "content_block_stop"} <= set(
        names
    )


def test_messages_tools(ant: anthropic.Anthropic) -> None:
    tools = [
        {
            "name": "Bash",
            "description": "run",
            "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
                "required": ["command"],
                "additionalProperties": False,
            },
        }
    ]
    with ant.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, tools=tools, messages=USER
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_use = final.content[-1]
    assert tool_use.type == "tool_use" and tool_use.name == "Bash"
    assert tool_use.input == {"command": "echo ok"}  # a shell tool: a harmless command

    non_stream = ant.messages.create(model="m", max_tokens=100, tools=tools, messages=USER)
    assert non_stream.content[-1].input == {"command": "echo ok"}

    after = ant.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        tools=tools,
        messages=[
            *USER,
            {"role": "assistant", "content": [tool_use.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "ok"}],
            },
        ],
    )
    assert after.stop_reason == "end_turn"
    assert after.content[0].text.startswith(GREETING)


def test_messages_requires_max_tokens(url: str, ant: anthropic.Anthropic) -> None:
    raw = httpx2.post(f"{url}/v1/messages", json={"model": "m", "messages": USER})
    assert raw.status_code == 400
    assert raw.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    assert raw.headers["request-id"]
    with pytest.raises(anthropic.BadRequestError) as exc:  # the SDK itself insists on max_tokens
        ant.post(
            "/v1/messages", cast_to=anthropic.types.Message, body={"model": "m", "messages": USER}
        )
    assert exc.value.body == raw.json()


def test_anthropic_cache_tokens(url: str, ant: anthropic.Anthropic) -> None:
    httpx2.post(f"{url}/_sim/reset")
    kwargs: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": SYSTEM_BLOCKS,
        "messages": [{"role": "user", "content": "first question"}],
    }
    first = ant.messages.create(**kwargs)
    assert first.usage.cache_creation_input_tokens > 0
    assert first.usage.cache_read_input_tokens == 0
    with ant.messages.stream(**kwargs) as stream:
        second = stream.get_final_message()
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    plain = ant.messages.create(model="m", max_tokens=10, messages=USER)
    assert plain.usage.cache_creation_input_tokens == 0 and plain.usage.cache_read_input_tokens == 0


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


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("status", "openai_error", "anthropic_error"),
    [
        (400, openai.BadRequestError, anthropic.BadRequestError),
        (404, openai.NotFoundError, anthropic.NotFoundError),
        (429, openai.RateLimitError, anthropic.RateLimitError),
        (500, openai.InternalServerError, anthropic.InternalServerError),
        (503, openai.InternalServerError, anthropic.InternalServerError),
    ],
)
def test_status_faults(
    oai: openai.OpenAI,
    ant: anthropic.Anthropic,
    status: int,
    openai_error: type[openai.APIStatusError],
    anthropic_error: type[anthropic.APIStatusError],
) -> None:
    with pytest.raises(openai_error) as oexc:
        oai.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers=_fault(str(status))
        )
    assert oexc.value.status_code == status
    assert set(oexc.value.body) == {"message", "type", "param", "code"}  # the "error" object
    with pytest.raises(anthropic_error) as aexc:
        ant.messages.create(
            model="m", max_tokens=5, messages=USER, extra_headers=_fault(str(status))
        )
    assert aexc.value.status_code == status
    body = aexc.value.body
    assert (
        isinstance(body, dict)
        and body["type"] == "error"
        and set(body["error"]) == {"type", "message"}
    )
    if status == 429:
        assert oexc.value.response.headers["retry-after"] == "1"
        assert aexc.value.response.headers["retry-after"] == "1"


def test_fault_timeout(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers=_fault("timeout")
        )
    client.close()


def test_fault_reset(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=_fault("reset"))
    with pytest.raises(anthropic.APIConnectionError):
        ant.messages.create(model="m", max_tokens=5, messages=USER, extra_headers=_fault("reset"))


def test_fault_html(url: str, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        oai.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=_fault("html"))
    assert exc.value.status_code == 502
    raw = httpx2.post(f"{url}/v1/messages", json={}, headers=_fault("html"))
    assert raw.status_code == 502
    assert raw.headers["content-type"].startswith("text/html")
    assert b"502 Bad Gateway" in raw.content


def test_fault_midstream(url: str, oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    httpx2.post(f"{url}/_sim/reset")
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, extra_headers=_fault("midstream:2")
        ):
            received.append(chunk)
    assert len(received) == 2
    # anthropic 2.12 lets the transport error through unwrapped once the stream has started.
    dropped = (anthropic.APIConnectionError, httpx2.RemoteProtocolError)
    with (
        pytest.raises(dropped),
        ant.messages.stream(
            model="m", max_tokens=50, messages=USER, extra_headers=_fault("midstream")
        ) as stream,
    ):
        stream.get_final_message()
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers=_fault("midstream")
        )
    stats = _stats(url)
    assert stats["streams_aborted"] == 2
    assert stats["streams_completed"] == 0 and stats["active_streams"] == 0


def test_fault_slow_first_byte_and_latency(oai: openai.OpenAI) -> None:
    start = time.monotonic()
    oai.chat.completions.create(
        model="gpt-4o", messages=USER, extra_headers=_fault("slow-first-byte:300")
    )
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    oai.chat.completions.create(
        model="gpt-4o", messages=USER, extra_headers={"x-simulator-latency-ms": "200"}
    )
    assert time.monotonic() - start >= 0.2


def test_event_delay(oai: openai.OpenAI) -> None:
    start = time.monotonic()
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            stream=True,
            extra_headers={"x-simulator-event-delay-ms": "20"},
        )
    )
    assert time.monotonic() - start >= 0.02 * (len(chunks) - 1)


def test_fault_malformed_sse(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's SSE parser
        list(
            oai.chat.completions.create(
                model="gpt-4o", messages=USER, stream=True, extra_headers=_fault("malformed-sse")
            )
        )
    with (
        pytest.raises(ValueError),
        ant.messages.stream(
            model="m", max_tokens=50, messages=USER, extra_headers=_fault("malformed-sse")
        ) as s,
    ):
        s.get_final_message()


def test_bad_simulator_header(url: str) -> None:
    raw = httpx2.post(f"{url}/v1/chat/completions", json={}, headers=_fault("bogus"))
    assert raw.status_code == 400
    assert "unknown fault" in raw.json()["error"]["message"]


def test_process_wide_fault() -> None:
    proc, base_url = _start("--fault", "503", "--latency-ms", "1")
    try:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="k", max_retries=0, timeout=5)
        with pytest.raises(openai.InternalServerError) as exc:
            client.chat.completions.create(model="gpt-4o", messages=USER)
        assert exc.value.status_code == 503
        with pytest.raises(openai.RateLimitError):  # the header wins over --fault
            client.chat.completions.create(
                model="gpt-4o", messages=USER, extra_headers=_fault("429")
            )
        client.close()
    finally:
        _stop(proc)


# --------------------------------------------------------------------------- replay


def test_replay_byte_identical(url: str) -> None:
    name = "openai-chat/plain-text-stop.sse"
    raw = httpx2.post(
        f"{url}/v1/chat/completions", json={"model": "gpt-4o"}, headers={"x-simulator-replay": name}
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "text/event-stream"
    assert raw.content == read_fixture(name)


def test_replay_anthropic_fixture_through_sdk(ant: anthropic.Anthropic) -> None:
    # The recorded file lacks a final blank line; the simulator terminates the last event.
    with ant.messages.stream(
        model="m",
        max_tokens=5,
        messages=USER,
        extra_headers={"x-simulator-replay": "anthropic-messages/basic_response.sse"},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Hello there!"
    assert final.stop_reason == "end_turn"


# --------------------------------------------------------------------------- introspection


def test_client_disconnect_is_counted(url: str) -> None:
    httpx2.post(f"{url}/_sim/reset")
    headers = {"x-simulator-event-delay-ms": "20", "x-simulator-output-words": "500"}
    body = {"model": "gpt-4o", "messages": USER, "stream": True}
    with (
        httpx2.Client() as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
        assert _stats(url)["active_streams"] == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = _stats(url)
        if stats["streams_client_disconnected"] == 1:
            break
        time.sleep(0.02)
    assert stats["streams_client_disconnected"] == 1
    assert stats["active_streams"] == 0
    assert stats["streams_started"] == 1 and stats["streams_completed"] == 0


def test_recorded_requests(url: str) -> None:
    httpx2.delete(f"{url}/_sim/requests")
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}'
    httpx2.post(
        f"{url}/v1/messages?beta=true",
        content=body,
        headers={"x-api-key": "sk-ant-secret", "anthropic-version": "2023-06-01"},
    )
    auth = {"authorization": "Bearer sk-1"}
    httpx2.post(f"{url}/v1/chat/completions", content=body, headers=auth)
    recorded = httpx2.get(f"{url}/_sim/requests").json()
    assert [r["path"] for r in recorded] == ["/v1/messages", "/v1/chat/completions"]
    first = recorded[0]
    assert first["method"] == "POST" and first["query_string"] == "beta=true"
    assert base64.b64decode(first["body"]) == body
    assert ["x-api-key", "sk-ant-secret"] in first["headers"]
    assert ["authorization", "Bearer sk-1"] in recorded[1]["headers"]
    httpx2.delete(f"{url}/_sim/requests")
    assert httpx2.get(f"{url}/_sim/requests").json() == []
    stats = httpx2.post(f"{url}/_sim/reset").json()
    assert stats["requests"] == 0


# --------------------------------------------------------------------------- real client requests

DATA = Path(__file__).parent / "data"  # structure-only copies from ../../shared (see CLIENTS.md)


def _sse(raw: str) -> list[tuple[str | None, dict[str, Any]]]:
    out = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((event, json.loads(data)))
    return out


def _send_recorded(url: str, item: dict[str, Any]) -> httpx2.Response:
    skip = {"host", "content-length", "connection", "accept-encoding"}
    headers = [(k, v) for k, v in item["headers"] if k.lower() not in skip]
    return httpx2.post(
        f"{url}{item['path']}", params=item["query"], json=item["body"], headers=headers, timeout=10
    )


def test_claude_code_turns(url: str) -> None:
    httpx2.post(f"{url}/_sim/reset")
    first, second = json.loads((DATA / "claude-code-2.1.330-tool.json").read_text())
    resp = _send_recorded(url, first)
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    events = _sse(resp.text)
    assert all(name == data["type"] for name, data in events)  # an event: line on every event
    usage = events[0][1]["message"]["usage"]
    assert usage["cache_creation_input_tokens"] > 0 and usage["cache_read_input_tokens"] == 0
    tool_start = [d for _, d in events if d["type"] == "content_block_start"][-1]
    assert tool_start["content_block"]["type"] == "tool_use"
    # Claude Code's first tool is Agent; the simulator prefers its shell tool, harmlessly.
    assert tool_start["content_block"]["name"] == "Bash"
    tool_json = "".join(
        d["delta"]["partial_json"]
        for _, d in events
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(tool_json) == {"command": "echo ok"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    events = _sse(_send_recorded(url, second).text)  # carries the tool_result
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[0][1]["message"]["usage"]["cache_read_input_tokens"] > 0
    recorded = httpx2.get(f"{url}/_sim/requests").json()[-1]
    assert recorded["path"] == "/v1/messages" and recorded["query_string"] == "beta=true"


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
