"""The pure chat ⇄ Gemini translators: unit checks and hypothesis properties.

The round trip reads the translated request back with the simulator's Gemini wire reader
(``gemini_to_chat``), which is how the simulator answers it: what the adapter sends is what a
Gemini upstream understands as the same conversation.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway import BadRequest, Usage
from tollway.formats import ChatToMessagesStream, TranslationError, chat_response_to_messages
from tollway.sse import SSESplitter
from tollway_provider_gemini import translate
from tollway_provider_gemini.translate import (
    ChainedStream,
    GeminiToChatStream,
    chat_request_to_gemini,
    gemini_response_to_chat,
    gemini_usage,
    json_schema_to_gemini,
)
from tollway_simulator.common import GREETING, Call, JsonReply, PrefixMemory
from tollway_simulator.gemini_wire import gemini_to_chat, generate_content

# --------------------------------------------------------------------------- units


def test_usage_counts_thoughts_as_output_and_cached_apart() -> None:
    usage = gemini_usage(
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "candidatesTokenCount": 10,
            "thoughtsTokenCount": 5,
            "totalTokenCount": 115,
        }
    )
    assert usage == Usage(
        input_tokens=40, output_tokens=15, cache_read_input_tokens=60, reasoning_tokens=5
    )
    chat = gemini_response_to_chat(
        {
            "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 100,
                "cachedContentTokenCount": 60,
                "candidatesTokenCount": 10,
                "thoughtsTokenCount": 5,
            },
        },
        model="m",
    )
    assert chat["usage"]["prompt_tokens"] == 100
    assert chat["usage"]["completion_tokens"] == 15
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 60}
    assert chat["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    doc = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert gemini_response_to_chat(doc, model="m")["choices"][0]["finish_reason"] == finish


def test_blocked_prompt_is_a_content_filter_refusal() -> None:
    doc = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    chat = gemini_response_to_chat(doc, model="m")
    choice = chat["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert "blockReason SAFETY" in choice["message"]["refusal"]
    message = chat_response_to_messages(chat)
    assert message["stop_reason"] == "refusal"
    translator = GeminiToChatStream(model="m", include_usage=True)
    out = translator.feed(b"data: " + orjson.dumps(doc) + b"\r\n\r\n") + translator.end()
    assert b'"finish_reason":"content_filter"' in out and out.endswith(b"data: [DONE]\n\n")


def test_thought_parts_are_left_out() -> None:
    doc = {
        "candidates": [
            {
                "content": {"parts": [{"text": "thinking...", "thought": True}, {"text": "42"}]},
                "finishReason": "STOP",
            }
        ]
    }
    assert gemini_response_to_chat(doc, model="m")["choices"][0]["message"]["content"] == "42"


def test_schema_conversion() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "when": {"type": ["string", "null"], "format": "date-time"},
            "kind": {"const": "a"},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
            "either": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "odd": {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
        },
        "required": ["when", "missing"],
        "additionalProperties": False,
        "$defs": {"tag": {"type": "string", "enum": ["x", "y"]}},
    }
    dropped = translate._Dropped()
    assert json_schema_to_gemini(schema, dropped) == {
        "type": "OBJECT",
        "properties": {
            "when": {"type": "STRING", "nullable": True, "format": "date-time"},
            "kind": {"type": "STRING", "enum": ["a"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["x", "y"]}},
            "either": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]},
            "odd": {"type": "OBJECT"},
        },
        "required": ["when"],
    }
    assert list(dropped.names) == ["tools.parameters.patternProperties"]


def test_tool_result_needs_its_call() -> None:
    with pytest.raises(BadRequest, match="tool_call_id"):
        chat_request_to_gemini(
            {"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]}
        )


def test_json_tool_results_are_sent_as_objects() -> None:
    body, _ = chat_request_to_gemini(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
            ]
        }
    )
    assert body["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "f", "args": {}}}],
    }
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "f", "response": {"temp": 21}}}
    ]


def test_stream_cut_before_finish_is_an_error() -> None:
    translator = GeminiToChatStream(model="m")
    translator.feed(b'data: {"candidates":[{"content":{"parts":[{"text":"a"}]}}]}\n\n')
    with pytest.raises(TranslationError):
        translator.end()


# --------------------------------------------------------------------------- strategies

_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda s: not s.startswith("{"))
_name = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
_scalar_schema = st.sampled_from(
    [{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}]
)
_args = st.dictionaries(_name, st.one_of(st.integers(-100, 100), _text, st.booleans()), max_size=3)


@st.composite
def conversations(draw: st.DrawFn) -> dict[str, Any]:
    """A chat request: optional system, then turns of user text / assistant text or tool calls
    answered by tool messages; tools declared for every called name."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(_text)})
    names: set[str] = set()
    n_calls = 0
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(_text)})
        if draw(st.booleans()):
            calls = []
            for name in draw(st.lists(_name, min_size=1, max_size=3)):
                n_calls += 1
                names.add(name)
                calls.append(
                    {
                        "id": f"id{n_calls}",
                        "type": "function",
                        "function": {"name": name, "arguments": orjson.dumps(draw(_args)).decode()},
                    }
                )
            text = draw(st.one_of(st.none(), _text))
            messages.append({"role": "assistant", "content": text, "tool_calls": calls})
            for call in calls:
                messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": draw(_text)}
                )
        else:
            messages.append({"role": "assistant", "content": draw(_text)})
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "parameters": {
                    "type": "object",
                    "properties": {"p": draw(_scalar_schema)},
                    "required": ["p"],
                },
            },
        }
        for name in sorted(names | set(draw(st.lists(_name, max_size=2))))
    ]
    body: dict[str, Any] = {"model": "gemini-2.5-flash", "messages": messages}
    if tools:
        body["tools"] = tools
    return body


def _normalise(messages: list[dict[str, Any]]) -> list[Any]:
    """Messages with tool call ids replaced by the call's position (ids are not kept: Gemini
    matches results to calls by name and order)."""
    position: dict[str, int] = {}
    out: list[Any] = []
    for m in messages:
        if m["role"] == "assistant":
            calls = []
            for call in m.get("tool_calls") or ():
                position[call["id"]] = len(position)
                calls.append(
                    (call["function"]["name"], orjson.loads(call["function"]["arguments"] or "{}"))
                )
            out.append(("assistant", m.get("content") or None, calls))
        elif m["role"] == "tool":
            out.append(("tool", position[m["tool_call_id"]], m["content"]))
        else:
            content = m["content"]
            if isinstance(content, list):
                content = "".join(p["text"] for p in content)
            out.append((m["role"], content))
    return out


@settings(max_examples=150, deadline=None)
@given(conversations())
def test_request_round_trips_through_the_gemini_wire(body: dict[str, Any]) -> None:
    gemini, dropped = chat_request_to_gemini(body)
    assert dropped == ()
    back = gemini_to_chat(orjson.loads(orjson.dumps(gemini)), body["model"])
    assert _normalise(back["messages"]) == _normalise(body["messages"])
    sent_tools = {t["function"]["name"]: t["function"]["parameters"] for t in body.get("tools", [])}
    back_tools = {t["function"]["name"]: t["function"]["parameters"] for t in back.get("tools", [])}
    assert back_tools == sent_tools

    # The simulated Gemini answer, translated back: a call of a declared function while tools
    # are offered and the conversation does not end with a result, else the greeting text.
    raw = orjson.dumps(gemini)
    reply = generate_content(
        Call(body=raw, data=orjson.loads(raw), headers={}, memory=PrefixMemory()),
        body["model"],
        stream=False,
    )
    assert isinstance(reply, JsonReply) and reply.status == 200, reply
    message = gemini_response_to_chat(orjson.loads(reply.body), model=body["model"])["choices"][0]
    if sent_tools and body["messages"][-1]["role"] != "tool":
        assert message["finish_reason"] == "tool_calls"
        assert message["message"]["tool_calls"][0]["function"]["name"] in sent_tools
    else:
        assert message["finish_reason"] == "stop"
        assert message["message"]["content"].startswith(GREETING)


# --------------------------------------------------------------------------- streams


_part = st.one_of(
    _text.map(lambda t: {"text": t}),
    st.tuples(_name, _args).map(lambda c: {"functionCall": {"name": c[0], "args": c[1]}}),
)


@st.composite
def split_streams(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, list[int]]:
    """A complete Gemini answer, its SSE stream split into events at random part boundaries,
    and random byte cut points of that stream."""
    parts = draw(st.lists(_part, min_size=1, max_size=8))
    reason = draw(st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY"]))
    usage = {"promptTokenCount": draw(st.integers(1, 500)), "candidatesTokenCount": 7}
    cuts = sorted(set(draw(st.lists(st.integers(1, len(parts)), max_size=len(parts)))))
    bounds = [0, *[c for c in cuts if c < len(parts)], len(parts)]
    events = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": parts[lo:hi]},
            "index": 0,
        }
        last = i == len(bounds) - 2
        if last:
            candidate["finishReason"] = reason
        event = {"candidates": [candidate], "responseId": "r1"}
        if last or draw(st.booleans()):
            event["usageMetadata"] = usage
        events.append(
            b"data: " + orjson.dumps(event) + draw(st.sampled_from([b"\n\n", b"\r\n\r\n"]))
        )
    raw = b"".join(events)
    byte_cuts = sorted(set(draw(st.lists(st.integers(0, len(raw)), max_size=6))))
    whole = {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": reason, "index": 0}
        ],
        "usageMetadata": usage,
        "responseId": "r1",
    }
    return whole, raw, byte_cuts


def _pieces(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _run(translator: Any, raw: bytes, cuts: list[int]) -> bytes:
    splitter = SSESplitter()
    out = b""
    for piece in _pieces(raw, cuts):
        for block in splitter.feed(piece):
            out += translator.feed(block)
    tail = splitter.tail()
    if tail.strip():
        out += translator.feed(tail + b"\n\n")
    return out + translator.end()


def _accumulate_chat(out: bytes) -> tuple[str, list[tuple[str, Any]], str | None, Any]:
    text, calls, finish, usage = "", {}, None, None
    for block in out.split(b"\n\n"):
        if not block.startswith(b"data: ") or block == b"data: [DONE]":
            continue
        doc = orjson.loads(block[6:])
        if doc.get("usage"):
            usage = doc["usage"]
        for choice in doc["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], ["", ""])
                entry[0] += call.get("function", {}).get("name") or ""
                entry[1] += call.get("function", {}).get("arguments") or ""
            finish = choice["finish_reason"] or finish
    tool_calls = [(calls[i][0], orjson.loads(calls[i][1])) for i in sorted(calls)]
    return text, tool_calls, finish, usage


@settings(max_examples=150, deadline=None)
@given(split_streams())
def test_any_split_of_a_stream_gives_the_complete_answer(
    case: tuple[dict[str, Any], bytes, list[int]],
) -> None:
    whole, raw, cuts = case
    expected = gemini_response_to_chat(whole, model="m")
    message = expected["choices"][0]["message"]
    calls = [
        (c["function"]["name"], orjson.loads(c["function"]["arguments"]))
        for c in message.get("tool_calls") or ()
    ]
    seen: list[Usage] = []
    out = _run(GeminiToChatStream(model="m", include_usage=True, on_usage=seen.append), raw, cuts)
    text, tool_calls, finish, usage = _accumulate_chat(out)
    assert text == (message["content"] or "")
    assert tool_calls == calls
    assert finish == expected["choices"][0]["finish_reason"]
    assert usage == expected["usage"]
    assert seen[-1] == gemini_usage(whole["usageMetadata"])
    assert out.endswith(b"data: [DONE]\n\n")

    # Composed with the core's chat → messages stream: the same as the complete translation.
    anthropic = chat_response_to_messages(expected)
    out = _run(
        ChainedStream(GeminiToChatStream(model="m", include_usage=True), ChatToMessagesStream()),
        raw,
        cuts,
    )
    blocks: dict[int, dict[str, Any]] = {}
    stop = None
    for event in out.split(b"\n\n"):
        if not event:
            continue
        assert event.startswith(b"event: ")
        doc = orjson.loads(event.split(b"\ndata: ", 1)[1])
        if doc["type"] == "content_block_start":
            blocks[doc["index"]] = {**doc["content_block"], "_json": ""}
        elif doc["type"] == "content_block_delta":
            delta = doc["delta"]
            block = blocks[doc["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                block["_json"] += delta["partial_json"]
        elif doc["type"] == "message_delta":
            stop = doc["delta"]["stop_reason"]
    streamed = []
    for i in sorted(blocks):
        block = blocks[i]
        if block["type"] == "text":
            streamed.append({"type": "text", "text": block["text"]})
        else:
            streamed.append(
                {
                    "type": "tool_use",
                    "name": block["name"],
                    "input": orjson.loads(block["_json"] or "{}"),
                }
            )

    # A chat completion keeps no order between text and tool calls: compare each kind.
    def kinds(blocks: list[dict[str, Any]]) -> tuple[str, list[Any]]:
        text = "".join(b["text"] for b in blocks if b["type"] == "text")
        uses = [(b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]
        return text, uses

    assert kinds(streamed) == kinds(anthropic["content"])
    assert stop == anthropic["stop_reason"]
