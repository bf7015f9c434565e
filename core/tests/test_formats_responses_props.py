"""Property tests: the Responses API ⇄ chat translation keeps a request's meaning and builds chat
requests the chat and Messages lanes take; translated answers and streams are what the official
openai SDK's own schemas and ``responses.stream()`` accumulator accept, whatever the upstream
chunking (the chat stream straight, or a Messages stream through the Messages lane first)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from openai import omit
from openai._models import validate_type
from openai._streaming import SSEDecoder
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from test_formats_props import (
    SETTINGS,
    anthropic_streams,
    build_anthropic_stream,
    build_chat_stream,
    chat_streams,
    ident,
    image_url,
    json_object,
    json_value,
    text,
)

from tollway import BadRequest, Usage
from tollway.formats import (
    ChatToResponsesStream,
    MessagesToChatStream,
    StreamTranslator,
    chat_request_to_messages,
    chat_response_to_responses,
    reframe_sse,
    responses_request_to_chat,
    responses_usage,
)

# --------------------------------------------------------------------------- requests


def _message(role: str, content: Any, typed: bool) -> dict[str, Any]:
    item = {"role": role, "content": content}
    return {"type": "message", **item} if typed else item


@st.composite
def responses_requests(draw: st.DrawFn) -> dict[str, Any]:
    tool_names = draw(st.lists(ident, max_size=3, unique=True))
    call_ids = iter(f"call_{i}" for i in range(1000))
    items: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 2))):
        role = draw(st.sampled_from(["system", "developer"]))
        content: Any = draw(text)
        if draw(st.booleans()):
            content = [
                {"type": "input_text", "text": t}
                for t in draw(st.lists(text, min_size=1, max_size=2))
            ]
        items.append(_message(role, content, draw(st.booleans())))
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            items.append(_message("user", draw(text), draw(st.booleans())))
        else:
            parts = [
                {"type": "input_text", "text": draw(text)}
                if draw(st.booleans())
                else {"type": "input_image", "image_url": draw(image_url)}
                for _ in range(draw(st.integers(1, 3)))
            ]
            items.append(_message("user", parts, draw(st.booleans())))
        if draw(st.booleans()):
            reply = [{"type": "output_text", "text": draw(text), "annotations": []}]
            items.append(_message("assistant", reply, True))
        calls = []
        if tool_names and draw(st.booleans()):
            for _ in range(draw(st.integers(1, 2))):
                calls.append(
                    {
                        "type": "function_call",
                        "call_id": next(call_ids),
                        "name": draw(st.sampled_from(tool_names)),
                        "arguments": orjson.dumps(draw(json_object)).decode(),
                    }
                )
        items.extend(calls)
        for call in calls:
            output: Any = draw(text)
            if draw(st.booleans()):
                output = [{"type": "input_text", "text": output}]
            items.append(
                {"type": "function_call_output", "call_id": call["call_id"], "output": output}
            )
    body: dict[str, Any] = {"model": "client-model", "input": items}
    if draw(st.booleans()):
        body["input"] = draw(text)
    if draw(st.booleans()):
        body["instructions"] = draw(text)
    if draw(st.booleans()):
        body["max_output_tokens"] = draw(st.integers(16, 10_000))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 2))
    if tool_names:
        body["tools"] = [
            {
                "type": "function",
                "name": name,
                "description": draw(text),
                "parameters": {"type": "object", "properties": draw(json_object)},
            }
            for name in tool_names
        ]
        body["tool_choice"] = draw(
            st.sampled_from(["auto", "none", "required"])
            | st.builds(lambda n: {"type": "function", "name": n}, st.sampled_from(tool_names))
        )
        if draw(st.booleans()):
            body["parallel_tool_calls"] = False
    if draw(st.booleans()):
        body["text"] = {
            "format": {
                "type": "json_schema",
                "name": "out",
                "schema": {"type": "object"},
                "strict": True,
            }
        }
    if draw(st.booleans()):
        body["stream"] = True
    return body


def _part_meaning(part: dict[str, Any]) -> tuple[str, str]:
    if part["type"] in ("input_text", "text"):
        return ("text", part["text"])
    return (
        "image",
        part["image_url"] if isinstance(part["image_url"], str) else part["image_url"]["url"],
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content or [] if p.get("type") != "image_url" and "text" in p)


def responses_meaning(body: dict[str, Any]) -> list[Any]:
    """A Responses request's conversation: assistant text and the calls after it are one turn."""
    turns: list[Any] = []
    if body.get("instructions"):
        turns.append(("system", body["instructions"]))
    items = body["input"]
    if isinstance(items, str):
        return [*turns, ("user", [("text", items)])]
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item["role"], item["content"]
            if role in ("system", "developer"):
                if _text_of(content):
                    turns.append(("system", _text_of(content)))
            elif role == "user":
                parts = (
                    [{"type": "input_text", "text": content}]
                    if isinstance(content, str)
                    else content
                )
                turns.append(("user", [_part_meaning(p) for p in parts]))
            else:
                turns.append(("assistant", _text_of(content), []))
        elif kind == "function_call":
            call = (item["call_id"], item["name"], orjson.loads(item["arguments"]))
            if turns and turns[-1][0] == "assistant":
                turns[-1][2].append(call)
            else:
                turns.append(("assistant", "", [call]))
        else:
            output = item["output"]
            turns.append(("tool", item["call_id"], _text_of(output)))
    return turns


def chat_turns(body: dict[str, Any]) -> list[Any]:
    turns: list[Any] = []
    for m in body["messages"]:
        role = m["role"]
        if role == "system":
            turns.append(("system", m["content"]))
        elif role == "user":
            content = m["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            turns.append(("user", [_part_meaning(p) for p in parts]))
        elif role == "assistant":
            calls = [
                (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
                for c in m.get("tool_calls") or []
            ]
            turns.append(("assistant", m.get("content") or "", calls))
        else:
            turns.append(("tool", m["tool_call_id"], _text_of(m["content"])))
    return turns


def assert_valid_chat_tool_sequence(messages: list[dict[str, Any]]) -> None:
    """OpenAI's rule: a tool message answers a call of the assistant message before the run of
    tool messages it is in."""
    open_calls: set[str] = set()
    for a, b in itertools.pairwise([{"role": "start"}, *messages]):
        if b["role"] == "tool":
            assert a["role"] in ("assistant", "tool"), "a tool message follows the calls"
            assert b["tool_call_id"] in open_calls
        if b["role"] == "assistant":
            open_calls = {c["id"] for c in b.get("tool_calls") or []}


@SETTINGS
@given(responses_requests())
def test_a_responses_request_keeps_its_meaning_in_chat(body: dict[str, Any]) -> None:
    chat, dropped = responses_request_to_chat(body, model="tiny-1")
    assert dropped == ()
    assert chat["model"] == "tiny-1"
    assert chat_turns(chat) == responses_meaning(body)
    assert_valid_chat_tool_sequence(chat["messages"])
    assert chat.get("max_tokens") == body.get("max_output_tokens")
    assert chat.get("temperature") == body.get("temperature")
    assert [t["function"]["name"] for t in chat.get("tools", [])] == [
        t["name"] for t in body.get("tools", [])
    ]
    if body.get("stream"):
        assert chat["stream_options"] == {"include_usage": True}
    # The Messages lane takes it on as it is (a Messages-only provider's path).
    messages, lane_dropped = chat_request_to_messages(chat, model="claude-x", default_max_tokens=64)
    assert set(lane_dropped) <= {"response_format"}
    assert messages["max_tokens"] == body.get("max_output_tokens", 64)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "input",
                "instructions",
                "tools",
                "tool_choice",
                "text",
                "max_output_tokens",
                "reasoning",
                "include",
            ]
        ),
        json_value,
    ),
    st.lists(
        st.dictionaries(
            st.sampled_from(["type", "role", "content", "call_id", "name", "arguments", "output"]),
            json_value
            | st.sampled_from(
                [
                    "message",
                    "function_call",
                    "function_call_output",
                    "user",
                    "assistant",
                    "input_text",
                ]
            ),
        ),
        max_size=4,
    ),
)
def test_any_body_translates_or_is_a_400(body: dict[str, Any], items: list[Any]) -> None:
    """Never another exception (a 500 for the client): a 400 names what is wrong."""
    if items:
        body["input"] = items
    try:
        responses_request_to_chat(body, model="m")
    except BadRequest as exc:
        assert exc.param


# --------------------------------------------------------------------------- complete answers


@SETTINGS
@given(
    st.none() | st.text(max_size=40),
    st.lists(st.tuples(ident, json_object), max_size=3),
    st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
    st.tuples(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000)),
)
def test_a_completion_becomes_a_response_the_sdk_validates(
    content: str | None,
    calls: list[tuple[str, dict[str, Any]]],
    finish: str,
    usage: tuple[int, int, int],
) -> None:
    prompt, cached, completion = usage
    cached = min(cached, prompt)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{k}",
                "type": "function",
                "function": {"name": n, "arguments": orjson.dumps(a).decode()},
            }
            for k, (n, a) in enumerate(calls)
        ]
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "tiny-1",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }
    out = chat_response_to_responses(doc, request={"model": "tiny", "input": "x"})
    response = Response.model_validate(out)
    assert response.output_text == (content or "")
    assert [
        (o.call_id, o.name, orjson.loads(o.arguments))
        for o in response.output
        if o.type == "function_call"
    ] == [(f"call_{k}", n, a) for k, (n, a) in enumerate(calls)]
    assert response.status == (
        "incomplete" if finish in ("length", "content_filter") else "completed"
    )
    assert response.usage is not None and response.usage.input_tokens == prompt
    assert responses_usage(out["usage"]) == Usage(
        input_tokens=prompt - cached, output_tokens=completion, cache_read_input_tokens=cached
    )


# --------------------------------------------------------------------------- streams


async def _cut(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        if start < cut < len(data):
            yield data[start:cut]
            start = cut
    yield data[start:]


def _translate(data: bytes, cuts: list[int], *translators: StreamTranslator) -> bytes:
    async def run() -> bytes:
        stream: AsyncIterator[bytes] = _cut(data, cuts)
        for translator in translators:
            stream = reframe_sse(stream, translator)
        return b"".join([c async for c in stream])

    return asyncio.run(run())


def sdk_final(out: bytes) -> Any:
    """Feed the SDK's ``responses.stream()`` accumulator (every event checked against its
    schema); the final event."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    events = []
    for sse in SSEDecoder().iter_bytes(iter([out])):
        data = sse.json()
        assert sse.event == data["type"]
        event = validate_type(type_=ResponseStreamEvent, value=data)  # type: ignore[arg-type]
        state.handle_event(event)
        events.append(event)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.output_item.added") == types.count("response.output_item.done")
    assert types[-1] in ("response.completed", "response.incomplete")
    assert types.count(types[-1]) == 1
    return events[-1]


@SETTINGS
@given(chat_streams())
def test_chat_streams_reassemble_in_the_openai_sdk(spec: dict[str, Any]) -> None:
    usages: list[Usage] = []
    out = _translate(
        build_chat_stream(spec), spec["cuts"], ChatToResponsesStream(on_usage=usages.append)
    )
    final = sdk_final(out)
    response = final.response
    assert response.output_text == spec["text"]
    calls = [o for o in response.output if o.type == "function_call"]
    assert [(c.call_id, c.name, orjson.loads(c.arguments)) for c in calls] == [
        (f"call_{k}", name, tool_input) for k, (name, tool_input, _) in enumerate(spec["tools"])
    ]
    assert response.status == ("incomplete" if spec["finish"] == "length" else "completed")
    assert response.model == "gpt-4o-2024-08-06"
    prompt, cached, completion = spec["usage"]
    cached = min(cached, prompt)
    if spec["usage_chunk"]:
        assert response.usage.input_tokens == prompt and response.usage.output_tokens == completion
        assert response.usage.input_tokens_details.cached_tokens == cached
        assert usages[-1] == Usage(prompt - cached, completion, cache_read_input_tokens=cached)
    else:
        assert response.usage.output_tokens == 0 and not usages


@SETTINGS
@given(anthropic_streams())
def test_messages_streams_reach_the_openai_sdk_through_the_chat_hub(spec: dict[str, Any]) -> None:
    """A Messages-only provider's stream: Messages → chat (the Messages lane) → Responses."""
    final = sdk_final(
        _translate(
            build_anthropic_stream(spec),
            spec["cuts"],
            MessagesToChatStream(include_usage=True),
            ChatToResponsesStream(),
        )
    )
    response = final.response
    assert response.output_text == spec["text"]
    assert [
        (c.call_id, c.name, orjson.loads(c.arguments))
        for c in response.output
        if c.type == "function_call"
    ] == [(f"toolu_{k}", name, tool_input) for k, (name, tool_input, _) in enumerate(spec["tools"])]
    assert response.status == ("incomplete" if spec["stop"] == "max_tokens" else "completed")
    inp, cache_read, cache_write, out_tokens = spec["usage"]
    assert response.usage.input_tokens == inp + cache_read + cache_write
    assert response.usage.output_tokens == (out_tokens or 1)
    assert response.usage.input_tokens_details.cached_tokens == cache_read
