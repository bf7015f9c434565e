"""The provider suite's capability checks: tool-call round trips through the official SDKs of
each format, image input, embeddings."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tollway_conformance.harness import GatewayProcess
from tollway_conformance.wire import auth_headers

__all__ = [
    "chat_tools",
    "embeddings_round_trip",
    "image_request",
    "messages_tools",
    "responses_tools",
]

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


#: A one-pixel PNG, as a data URL.
_PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def image_request(fmt: str, model: str, text: str) -> dict[str, Any]:
    """A one-message request in ``fmt`` with ``text`` and a small image."""
    if fmt == "chat":
        parts: list[dict[str, Any]] = [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": _PIXEL}},
        ]
        return {"model": model, "messages": [{"role": "user", "content": parts}]}
    data = _PIXEL.partition(",")[2]
    blocks = [
        {"type": "text", "text": text},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
    ]
    return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": blocks}]}


def embeddings_round_trip(gw: GatewayProcess, model: str) -> None:
    """``/v1/embeddings`` with two inputs: two vectors back, input tokens on ``ctx.usage``."""
    resp = httpx.post(
        gw.url + "/v1/embeddings",
        json={"model": model, "input": ["first text", "second text"]},
        headers=auth_headers("chat", gw.key),
        timeout=30,
    )
    assert resp.status_code == 200, (
        f"embeddings call: expected 200, got {resp.status_code}: {resp.text[:500]}"
    )
    data = resp.json().get("data")
    assert isinstance(data, list) and len(data) == 2, (
        f"two inputs must give two embeddings in `data`, got: {resp.text[:300]}"
    )
    rec = gw.record_for(resp.headers["x-langwatch-request-id"])
    assert rec["usage"] is not None and rec["usage"]["input_tokens"] > 0, (
        "usage not reported for an embeddings call: set ctx.usage = "
        "tollway.Usage(input_tokens=…) from the response's usage"
    )
