"""Property tests: chat ↔ messages translation preserves meaning, both ways, requests and
streams (streams judged by the official SDKs' own accumulators)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
from anthropic._streaming import SSEDecoder as AnthropicSSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as OpenAISSEDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from tollway import Usage
from tollway.formats import (
    ChatToMessagesStream,
    MessagesToChatStream,
    StreamTranslator,
    chat_request_to_messages,
    chat_response_to_messages,
    finish_reason_from_stop,
    messages_request_to_chat,
    messages_response_to_chat,
    reframe_sse,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(min_size=1, max_size=30)
ident = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,15}", fullmatch=True)
json_scalar = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=12)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ident, inner, max_size=3),
    max_leaves=8,
)
json_object = st.dictionaries(ident, json_value, max_size=4)
image_url = st.one_of(
    st.from_regex(r"https://img\.example/[a-z]{1,8}\.png", fullmatch=True),
    st.builds(
        lambda media, data: f"data:{media};base64,{data}",
        st.sampled_from(["image/png", "image/jpeg", "image/webp"]),
        st.from_regex(r"[A-Za-z0-9+/]{4,40}={0,2}", fullmatch=True),
    ),
)


# --------------------------------------------------------------------------- chat requests


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 2))):
        role = draw(st.sampled_from(["system", "developer"]))
        if draw(st.booleans()):
            messages.append({"role": role, "content": draw(text)})
        else:
            parts = draw(st.lists(text, min_size=1, max_size=2))
            messages.append({"role": role, "content": [{"type": "text", "text": t} for t in parts]})
    tool_names = draw(st.lists(ident, min_size=0, max_size=3, unique=True))
    call_ids = iter(f"call_{i}" for i in range(1000))
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            messages.append({"role": "user", "content": draw(text)})
        else:
            parts: list[dict[str, Any]] = []
            for _ in range(draw(st.integers(1, 3))):
                if draw(st.booleans()):
                    parts.append({"type": "text", "text": draw(text)})
                else:
                    parts.append({"type": "image_url", "image_url": {"url": draw(image_url)}})
            messages.append({"role": "user", "content": parts})
        assistant: dict[str, Any] = {"role": "assistant"}
        calls = []
        if tool_names and draw(st.booleans()):
            for _ in range(draw(st.integers(1, 2))):
                calls.append(
                    {
                        "id": next(call_ids),
                        "type": "function",
                        "function": {
                            "name": draw(st.sampled_from(tool_names)),
                            "arguments": orjson.dumps(draw(json_object)).decode(),
                        },
                    }
                )
            assistant["tool_calls"] = calls
            assistant["content"] = draw(st.none() | text)
        else:
            assistant["content"] = draw(text)
        messages.append(assistant)
        for call in calls:
            content: Any = draw(text)
            if draw(st.booleans()):
                content = [{"type": "text", "text": content}]
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
    if draw(st.booleans()):
        messages.append({"role": "user", "content": draw(text)})
    body: dict[str, Any] = {
        "model": "client-model",
        "messages": messages,
        "max_completion_tokens": draw(st.integers(1, 10_000)),
    }
    if tool_names:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": draw(text),
                    "parameters": {"type": "object", "properties": draw(json_object)},
                },
            }
            for name in tool_names
        ]
        body["tool_choice"] = draw(
            st.sampled_from(["auto", "none", "required"])
            | st.builds(
                lambda n: {"type": "function", "function": {"name": n}},
                st.sampled_from(tool_names),
            )
        )
        if draw(st.booleans()):
            body["parallel_tool_calls"] = False
    if draw(st.booleans()):
        body["stop"] = draw(st.lists(text, min_size=1, max_size=4))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    return body


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    return [p["text"] for p in content or [] if p.get("type") == "text" and p["text"]]


def chat_meaning(body: dict[str, Any]) -> dict[str, Any]:
    """What a chat request means, independent of equivalent spellings."""
    system: list[str] = []
    turns: list[Any] = []
    for m in body["messages"]:
        role = m["role"]
        if role in ("system", "developer"):
            system.extend(_texts(m["content"]))
        elif role == "user":
            content = m["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            turns.append(
                (
                    "user",
                    [
                        ("text", p["text"])
                        if p["type"] == "text"
                        else ("image", p["image_url"]["url"])
                        for p in content
                        if p["type"] != "text" or p["text"]
                    ],
                )
            )
        elif role == "assistant":
            calls = [
                (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"] or "{}"))
                for c in m.get("tool_calls") or []
            ]
            turns.append(("assistant", "".join(_texts(m.get("content"))), calls))
        elif role == "tool":
            turns.append(("tool", m["tool_call_id"], "".join(_texts(m["content"]))))
    tools = [
        (t["function"]["name"], t["function"].get("description"), t["function"].get("parameters"))
        for t in body.get("tools") or []
    ]
    stop = body.get("stop")
    return {
        "system": system,
        "turns": turns,
        "tools": tools,
        "tool_choice": body.get("tool_choice") if tools else None,
        # With tool_choice "none" no tool is called: parallelism means nothing.
        "parallel": body.get("parallel_tool_calls", True)
        if tools and body.get("tool_choice") != "none"
        else True,
        "max": body.get("max_completion_tokens") or body.get("max_tokens"),
        "stop": [stop] if isinstance(stop, str) else stop,
        "temperature": body.get("temperature"),
    }


@SETTINGS
@given(chat_requests())
def test_chat_request_survives_a_round_trip_through_messages(body: dict[str, Any]) -> None:
    anthropic, dropped = chat_request_to_messages(body, model="claude-sonnet-4-5")
    assert dropped == ()
    roles = [m["role"] for m in anthropic["messages"]]
    # Tool results merge: never two tool-result user messages in a row.
    for a, b in itertools.pairwise(anthropic["messages"]):
        if a["role"] == b["role"] == "user" and isinstance(a["content"], list):
            assert not (
                a["content"]
                and b["content"]
                and isinstance(b["content"], list)
                and a["content"][0].get("type") == "tool_result"
                and b["content"][0].get("type") == "tool_result"
            )
    assert "system" not in roles
    back, dropped_back = messages_request_to_chat(anthropic, model="client-model")
    assert dropped_back == ()
    assert chat_meaning(back) == chat_meaning(body)


# --------------------------------------------------------------------------- messages requests


@st.composite
def messages_requests(draw: st.DrawFn) -> dict[str, Any]:
    tool_names = draw(st.lists(ident, min_size=0, max_size=3, unique=True))
    ids = iter(f"toolu_{i:02d}" for i in range(1000))
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            messages.append({"role": "user", "content": draw(text)})
        else:
            blocks: list[dict[str, Any]] = []
            for _ in range(draw(st.integers(1, 3))):
                if draw(st.booleans()):
                    blocks.append({"type": "text", "text": draw(text)})
                else:
                    url = draw(image_url)
                    if url.startswith("data:"):
                        media, data = url[5:].split(";base64,")
                        source = {"type": "base64", "media_type": media, "data": data}
                    else:
                        source = {"type": "url", "url": url}
                    blocks.append({"type": "image", "source": source})
            messages.append({"role": "user", "content": blocks})
        content: list[dict[str, Any]] = []
        if draw(st.booleans()):
            content.append({"type": "text", "text": draw(text)})
        uses = []
        if tool_names and draw(st.booleans()):
            for _ in range(draw(st.integers(1, 2))):
                uses.append(
                    {
                        "type": "tool_use",
                        "id": next(ids),
                        "name": draw(st.sampled_from(tool_names)),
                        "input": draw(json_object),
                    }
                )
        if not content and not uses:
            content.append({"type": "text", "text": draw(text)})
        messages.append({"role": "assistant", "content": content + uses})
        if uses:
            results: list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_use_id": u["id"],
                    "content": draw(
                        text
                        | st.lists(text, min_size=1, max_size=2).map(
                            lambda ts: [{"type": "text", "text": t} for t in ts]
                        )
                    ),
                }
                for u in uses
            ]
            if draw(st.booleans()):
                results.append({"type": "text", "text": draw(text)})
            messages.append({"role": "user", "content": results})
    body: dict[str, Any] = {
        "model": "client-model",
        "max_tokens": draw(st.integers(1, 10_000)),
        "messages": messages,
    }
    if draw(st.booleans()):
        body["system"] = draw(
            text
            | st.lists(text, min_size=1, max_size=2).map(
                lambda ts: [{"type": "text", "text": t} for t in ts]
            )
        )
    if tool_names:
        body["tools"] = [
            {"name": n, "description": draw(text), "input_schema": {"type": "object"}}
            for n in tool_names
        ]
        choice = draw(
            st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}])
            | st.builds(lambda n: {"type": "tool", "name": n}, st.sampled_from(tool_names))
        )
        if choice["type"] != "none" and draw(st.booleans()):
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    if draw(st.booleans()):
        body["stop_sequences"] = draw(st.lists(text, min_size=1, max_size=4))
    return body


def messages_meaning(body: dict[str, Any]) -> dict[str, Any]:
    """What a Messages request means: consecutive same-role turns are one turn."""
    system = body.get("system")
    system_texts = _texts(system) if system is not None else []
    turns: list[tuple[str, list[Any]]] = []
    for m in body["messages"]:
        content = m["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        items: list[Any] = []
        texts: list[str] = []
        for b in content:
            if b["type"] == "text":
                if m["role"] == "assistant":
                    texts.append(b["text"])
                elif b["text"]:
                    items.append(("text", b["text"]))
            elif b["type"] == "image":
                items.append(("image", orjson.dumps(b["source"], option=orjson.OPT_SORT_KEYS)))
            elif b["type"] == "tool_use":
                items.append(("tool_use", b["id"], b["name"], b["input"]))
            elif b["type"] == "tool_result":
                items.append(("tool_result", b["tool_use_id"], "".join(_texts(b["content"]))))
        if texts:
            items.insert(0, ("text", "".join(texts)))
        if turns and turns[-1][0] == m["role"]:
            turns[-1][1].extend(items)
        else:
            turns.append((m["role"], items))
    tool_choice = body.get("tool_choice") if body.get("tools") else None
    return {
        "system": system_texts,
        "turns": turns,
        "tools": [
            (t["name"], t.get("description"), t["input_schema"]) for t in body.get("tools") or []
        ],
        "tool_choice": tool_choice,
        "max": body["max_tokens"],
        "stop": body.get("stop_sequences"),
    }


@SETTINGS
@given(messages_requests())
def test_messages_request_survives_a_round_trip_through_chat(body: dict[str, Any]) -> None:
    chat, dropped = messages_request_to_chat(body, model="gpt-4o")
    assert dropped == ()
    assert [m["role"] for m in chat["messages"] if m["role"] == "tool"] == [
        "tool"
        for m in body["messages"]
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    back, dropped_back = chat_request_to_messages(chat, model="client-model")
    assert dropped_back == ()
    assert messages_meaning(back) == messages_meaning(body)


# --------------------------------------------------------------------------- streams


async def _cut(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        if start < cut < len(data):
            yield data[start:cut]
            start = cut
    yield data[start:]


def _translate(data: bytes, translator: StreamTranslator, cuts: list[int]) -> bytes:
    async def run() -> bytes:
        return b"".join([c async for c in reframe_sse(_cut(data, cuts), translator)])

    return asyncio.run(run())


def _split(s: str, points: list[int]) -> list[str]:
    cuts = sorted({p % (len(s) + 1) for p in points} | {0, len(s)})
    return [s[a:b] for a, b in itertools.pairwise(cuts)]


def _anthropic_event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


@st.composite
def anthropic_streams(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "text": draw(st.text(max_size=60)),
        "text_points": draw(st.lists(st.integers(0, 100), max_size=6)),
        "tools": draw(
            st.lists(
                st.tuples(ident, json_object, st.lists(st.integers(0, 200), max_size=5)),
                max_size=3,
            )
        ),
        "stop": draw(st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "tool_use"])),
        "usage": draw(st.tuples(*[st.integers(0, 5000)] * 4)),
        "cuts": draw(st.lists(st.integers(0, 5000), max_size=12)),
        "include_usage": draw(st.booleans()),
    }


def build_anthropic_stream(spec: dict[str, Any]) -> bytes:
    inp, cache_read, cache_write, out = spec["usage"]
    events = [
        _anthropic_event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-haiku-4-5-20251001",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": inp,
                        "cache_read_input_tokens": cache_read,
                        "cache_creation_input_tokens": cache_write,
                        "output_tokens": 1,
                    },
                },
            },
        ),
        b'event: ping\ndata: {"type": "ping"}\n\n',
    ]
    index = 0
    if spec["text"] or not spec["tools"]:
        events.append(
            _anthropic_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        for piece in _split(spec["text"], spec["text_points"]):
            events.append(
                _anthropic_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            )
        events.append(
            _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        )
        index = 1
    for k, (name, tool_input, points) in enumerate(spec["tools"]):
        events.append(
            _anthropic_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": f"toolu_{k}",
                        "name": name,
                        "input": {},
                    },
                },
            )
        )
        for piece in ["", *_split(orjson.dumps(tool_input).decode(), points)]:
            events.append(
                _anthropic_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            )
        events.append(
            _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": index})
        )
        index += 1
    events.append(
        _anthropic_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": spec["stop"], "stop_sequence": None},
                "usage": {"output_tokens": out},
            },
        )
    )
    events.append(_anthropic_event("message_stop", {"type": "message_stop"}))
    return b"".join(events)


@SETTINGS
@given(anthropic_streams())
def test_anthropic_streams_reassemble_in_the_openai_sdk(spec: dict[str, Any]) -> None:
    raw = build_anthropic_stream(spec)
    usages: list[Usage] = []
    out = _translate(
        raw,
        MessagesToChatStream(include_usage=spec["include_usage"], on_usage=usages.append),
        spec["cuts"],
    )
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    done = False
    for sse in OpenAISSEDecoder().iter_bytes(iter([out])):
        if sse.data == "[DONE]":
            done = True
            continue
        assert not done, "nothing may follow [DONE]"
        state.handle_chunk(ChatCompletionChunk.model_validate(sse.json()))
    assert done
    completion = state.current_completion_snapshot
    message = completion.choices[0].message
    assert (message.content or "") == spec["text"]
    assert [
        (c.id, c.function.name, orjson.loads(c.function.arguments))
        for c in message.tool_calls or []
    ] == [(f"toolu_{k}", name, tool_input) for k, (name, tool_input, _) in enumerate(spec["tools"])]
    assert completion.choices[0].finish_reason == finish_reason_from_stop(spec["stop"])
    assert completion.model == "claude-haiku-4-5-20251001"
    inp, cache_read, cache_write, out_tokens = spec["usage"]
    if spec["include_usage"]:
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == inp + cache_read + cache_write
        assert completion.usage.completion_tokens == (out_tokens or 1)
        assert completion.usage.prompt_tokens_details.cached_tokens == cache_read
    else:
        assert completion.usage is None
    assert usages[-1] == Usage(
        input_tokens=inp,
        output_tokens=out_tokens or 1,
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
    )


@st.composite
def chat_streams(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "text": draw(st.text(max_size=60)),
        "text_points": draw(st.lists(st.integers(0, 100), max_size=6)),
        "tools": draw(
            st.lists(
                st.tuples(ident, json_object, st.lists(st.integers(0, 200), max_size=5)),
                max_size=3,
            )
        ),
        "finish": draw(st.sampled_from(["stop", "length", "tool_calls"])),
        "usage": draw(st.tuples(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000))),
        "usage_chunk": draw(st.booleans()),
        "done": draw(st.booleans()),
        "cuts": draw(st.lists(st.integers(0, 5000), max_size=12)),
    }


def build_chat_stream(spec: dict[str, Any]) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return (
            b"data: "
            + orjson.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "gpt-4o-2024-08-06",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )
            + b"\n\n"
        )

    events = [chunk({"role": "assistant", "content": ""})]
    for piece in _split(spec["text"], spec["text_points"]) if spec["text"] else []:
        events.append(chunk({"content": piece}))
    for k, (name, tool_input, points) in enumerate(spec["tools"]):
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": k,
                            "id": f"call_{k}",
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in _split(orjson.dumps(tool_input).decode(), points):
            events.append(chunk({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}))
    events.append(chunk({}, spec["finish"]))
    prompt, cached, completion = spec["usage"]
    cached = min(cached, prompt)
    if spec["usage_chunk"]:
        events.append(
            b"data: "
            + orjson.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "model": "gpt-4o-2024-08-06",
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                        "prompt_tokens_details": {"cached_tokens": cached},
                    },
                }
            )
            + b"\n\n"
        )
    if spec["done"]:
        events.append(b"data: [DONE]\n\n")
    return b"".join(events)


@SETTINGS
@given(chat_streams())
def test_chat_streams_reassemble_in_the_anthropic_sdk(spec: dict[str, Any]) -> None:
    raw = build_chat_stream(spec)
    usages: list[Usage] = []
    out = _translate(raw, ChatToMessagesStream(on_usage=usages.append), spec["cuts"])
    snapshot = None
    bufs: dict[int, bytes] = {}
    names: list[str] = []
    indexes: list[int] = []
    for sse in AnthropicSSEDecoder().iter_bytes(iter([out])):
        assert sse.event is not None, "every event needs an event: line"
        data = sse.json()
        assert data["type"] == sse.event
        names.append(sse.event)
        if sse.event == "content_block_start":
            indexes.append(data["index"])
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert indexes == list(range(len(indexes))), "content block indexes are contiguous"
    assert names.count("content_block_start") == names.count("content_block_stop")
    assert snapshot is not None
    texts = "".join(b.text for b in snapshot.content if b.type == "text")
    assert texts == spec["text"]
    assert [(b.id, b.name, b.input) for b in snapshot.content if b.type == "tool_use"] == [
        (f"call_{k}", name, tool_input) for k, (name, tool_input, _) in enumerate(spec["tools"])
    ]
    expected_stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[
        spec["finish"]
    ]
    if spec["finish"] == "stop" and spec["tools"]:
        expected_stop = "tool_use"
    assert snapshot.stop_reason == expected_stop
    prompt, cached, completion = spec["usage"]
    cached = min(cached, prompt)
    if spec["usage_chunk"]:
        assert snapshot.usage.input_tokens == prompt - cached
        assert snapshot.usage.cache_read_input_tokens == cached
        assert snapshot.usage.output_tokens == completion
        assert usages[-1].output_tokens == completion
    else:
        assert snapshot.usage.output_tokens == 0 and not usages


# --------------------------------------------------------------------------- responses


@SETTINGS
@given(
    st.text(max_size=40),
    st.lists(st.tuples(ident, json_object), max_size=3),
    st.sampled_from(["end_turn", "max_tokens", "tool_use", "refusal", "stop_sequence"]),
    st.tuples(*[st.integers(0, 5000)] * 4),
)
def test_message_responses_survive_a_round_trip(
    text_: str, tools: list[tuple[str, dict[str, Any]]], stop: str, usage: tuple[int, ...]
) -> None:
    content: list[dict[str, Any]] = [{"type": "text", "text": text_}] if text_ else []
    content += [
        {"type": "tool_use", "id": f"toolu_{k}", "name": n, "input": i}
        for k, (n, i) in enumerate(tools)
    ]
    doc = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage[0],
            "cache_read_input_tokens": usage[1],
            "cache_creation_input_tokens": usage[2],
            "output_tokens": usage[3],
        },
    }
    chat = messages_response_to_chat(doc)
    back = chat_response_to_messages(chat)
    assert back["content"] == content
    expected = {"stop_sequence": "end_turn"}.get(stop, stop)
    if stop in ("end_turn", "stop_sequence") and tools:
        expected = "tool_use"
    assert back["stop_reason"] == expected
    assert back["usage"]["cache_read_input_tokens"] == usage[1]
    # OpenAI has no cache-write count: cache writes come back as plain input.
    assert back["usage"]["input_tokens"] == usage[0] + usage[2]
    assert back["usage"]["output_tokens"] == usage[3]
