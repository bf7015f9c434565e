"""The provider suite's tool-call round trips, through the official SDKs of each format."""

from __future__ import annotations

import json
from typing import Any

from tollway_conformance.harness import GatewayProcess

__all__ = ["chat_tools", "messages_tools", "responses_tools"]

_TOOL_NAME = "get_weather"
_TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def chat_tools(gw: GatewayProcess, model: str) -> None:
    client = gw.openai()
    tools = [{"type": "function", "function": {"name": _TOOL_NAME, "parameters": _TOOL_SCHEMA}}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Paris?"}]
    reply = client.chat.completions.create(
        model=model, messages=messages, tools=tools, max_completion_tokens=256
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == _TOOL_NAME
    assert "city" in json.loads(call.function.arguments)
    name, args = "", ""
    for chunk in client.chat.completions.create(
        model=model,
        messages=messages,
        tools=tools,
        max_completion_tokens=256,
        stream=True,
    ):
        for c in chunk.choices:
            for delta in c.delta.tool_calls or ():
                name += (delta.function and delta.function.name) or ""
                args += (delta.function and delta.function.arguments) or ""
    assert name == _TOOL_NAME, f"streamed tool call name {name!r}"
    assert "city" in json.loads(args), f"streamed tool arguments {args!r}"
    follow = [
        *messages,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": _TOOL_NAME, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    done = client.chat.completions.create(
        model=model, messages=follow, tools=tools, max_completion_tokens=256
    )
    assert done.choices[0].message.content, "no text after the tool result"


def messages_tools(gw: GatewayProcess, model: str) -> None:
    client = gw.anthropic()
    tools = [{"name": _TOOL_NAME, "description": "weather", "input_schema": _TOOL_SCHEMA}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Paris?"}]
    reply = client.messages.create(model=model, max_tokens=256, messages=messages, tools=tools)
    assert reply.stop_reason == "tool_use", reply
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert uses and uses[0].name == _TOOL_NAME and "city" in uses[0].input, reply.content
    with client.messages.stream(
        model=model, max_tokens=256, messages=messages, tools=tools
    ) as stream:
        final = stream.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert streamed and streamed[0].name == _TOOL_NAME, final.content
    assert "city" in streamed[0].input, streamed[0].input
    follow = [
        *messages,
        {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny, 21 C"}
            ],
        },
    ]
    done = client.messages.create(model=model, max_tokens=256, messages=follow, tools=tools)
    assert any(b.type == "text" and b.text for b in done.content), done.content


def responses_tools(gw: GatewayProcess, model: str) -> None:
    client = gw.openai()
    tools = [{"type": "function", "name": _TOOL_NAME, "parameters": _TOOL_SCHEMA}]
    reply = client.responses.create(model=model, input="weather in Paris?", tools=tools)
    calls = [o for o in reply.output if o.type == "function_call"]
    assert calls and calls[0].name == _TOOL_NAME, reply.output
    assert "city" in json.loads(calls[0].arguments)
    final = None
    for event in client.responses.create(
        model=model, input="weather in Paris?", tools=tools, stream=True
    ):
        if event.type == "response.completed":
            final = event.response
    assert final is not None, "the stream had no response.completed event"
    streamed = [o for o in final.output if o.type == "function_call"]
    assert streamed and streamed[0].name == _TOOL_NAME, final.output
    done = client.responses.create(
        model=model,
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": _TOOL_NAME,
                "arguments": calls[0].arguments,
            },
            {
                "type": "function_call_output",
                "call_id": calls[0].call_id,
                "output": "sunny, 21 C",
            },
        ],
        tools=tools,
    )
    assert done.output_text, "no text after the tool result"
