"""The simulator's Anthropic wire (messages) driven by the official anthropic SDK, and Claude
Code's recorded requests."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from simulator_helpers import DATA, USER, _send_recorded, _sse

from tollway_simulator.common import GREETING

pytest_plugins = ["simulator_fixtures"]

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


# --------------------------------------------------------------------------- real client requests


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
