"""Pure translation: chat ⇄ Converse, the ConverseStream decoder, and the simulator's
event-stream encoder (read back by botocore). Unit tests plus hypothesis properties."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from botocore.eventstream import EventStreamBuffer  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway import BadRequest, UpstreamHTTPError, Usage
from tollway.formats import TranslationError
from tollway_provider_bedrock import converse_url
from tollway_provider_bedrock.eventstream import (
    BedrockStreamError,
    EventStreamReader,
    converse_stream_to_chat,
)
from tollway_provider_bedrock.translate import (
    ConverseToChatStream,
    chat_request_to_converse,
    converse_response_to_chat,
    converse_usage,
)
from tollway_simulator.bedrock_wire import encode_frame, event_frame, exception_frame

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-an-image").decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


# --------------------------------------------------------------------------- requests


def test_request_maps_system_inference_tools_and_metadata() -> None:
    body, dropped = chat_request_to_converse(
        {
            "model": "x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
                {"role": "user", "content": "Weather?"},
            ],
            "max_completion_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "user": "end-user-7",
            "seed": 3,
            "n": 1,
            "parallel_tool_calls": True,
        },
        model=MODEL,
    )
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "Weather?"}]}],
        "system": [{"text": "Be brief."}, {"text": "No emojis."}],
        "inferenceConfig": {
            "maxTokens": 100,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "inputSchema": {"json": WEATHER["function"]["parameters"]},
                    }
                }
            ],
            "toolChoice": {"tool": {"name": "get_weather"}},
        },
        "requestMetadata": {"user": "end-user-7"},
    }
    assert dropped == ("seed",)


def test_tool_turns_merge_into_alternating_messages() -> None:
    body, _ = chat_request_to_converse(
        {
            "messages": [
                {"role": "user", "content": "Weather in Oslo and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "rain"}],
                },
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [WEATHER],
            "tool_choice": "required",
        },
        model=MODEL,
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Oslo and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"text": "Checking."},
                {
                    "toolUse": {
                        "toolUseId": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    }
                },
                {
                    "toolUse": {
                        "toolUseId": "call_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    }
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "rain"}]}},
                {"text": "Thanks"},
            ],
        },
    ]
    assert body["toolConfig"]["toolChoice"] == {"any": {}}


def test_tool_choice_none_leaves_tools_out_and_is_reported() -> None:
    body, dropped = chat_request_to_converse(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [WEATHER],
            "tool_choice": "none",
        },
        model=MODEL,
    )
    assert "toolConfig" not in body and dropped == ("tool_choice",)


def test_images_and_top_k() -> None:
    body, dropped = chat_request_to_converse(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                }
            ],
            "top_k": 5,
        },
        model=MODEL,
    )
    assert body["messages"][0]["content"][1] == {
        "image": {"format": "png", "source": {"bytes": PNG}}
    }
    assert body["additionalModelRequestFields"] == {"top_k": 5} and dropped == ()
    # Other model families have no documented top_k field: dropped and reported.
    body, dropped = chat_request_to_converse(
        {"messages": [{"role": "user", "content": "hi"}], "top_k": 5}, model="amazon.nova-pro-v1:0"
    )
    assert "additionalModelRequestFields" not in body and dropped == ("top_k",)


def test_http_image_url_is_a_400_naming_it() -> None:
    with pytest.raises(BadRequest) as info:
        chat_request_to_converse(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://img.example/c.png"}}
                        ],
                    }
                ]
            },
            model=MODEL,
        )
    assert info.value.status == 400
    assert info.value.param == "messages[0].content[0].image_url.url"
    assert "https://img.example/c.png" in info.value.message


# --------------------------------------------------------------------------- responses


def test_response_maps_text_tools_stop_and_usage() -> None:
    doc = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"text": "Let me check."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_1",
                            "name": "get_weather",
                            "input": {"city": "Oslo"},
                        }
                    },
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 10,
            "outputTokens": 5,
            "totalTokens": 45,
            "cacheReadInputTokens": 20,
            "cacheWriteInputTokens": 10,
        },
    }
    chat = converse_response_to_chat(doc, model=MODEL, id_="chatcmpl-x", created=1)
    choice = chat["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "tooluse_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        }
    ]
    assert chat["usage"]["prompt_tokens"] == 40
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 20}
    assert converse_usage(doc["usage"]) == Usage(10, 5, 20, 10)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    doc = {
        "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
        "stopReason": stop,
    }
    assert converse_response_to_chat(doc, model=MODEL)["choices"][0]["finish_reason"] == finish


# --------------------------------------------------------------------------- streams


def _converse_events(
    texts: list[str], tools: list[tuple[str, str]], stop: str, usage: dict[str, int]
) -> list[tuple[str, dict[str, Any]]]:
    """A ConverseStream for a text block (deltas ``texts``) and tool blocks (name, JSON)."""
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    index = 0
    if texts:
        events += [
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}}) for t in texts
        ]
        events.append(("contentBlockStop", {"contentBlockIndex": 0}))
        index = 1
    for k, (name, arguments) in enumerate(tools):
        start = {"toolUse": {"toolUseId": f"tooluse_{k}", "name": name}}
        events.append(("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        for i in range(0, len(arguments), 7):
            delta = {"toolUse": {"input": arguments[i : i + 7]}}
            events.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    events.append(("messageStop", {"stopReason": stop}))
    events.append(("metadata", {"usage": usage, "metrics": {"latencyMs": 3}, "p": "abc"}))
    return events


def _sse_docs(raw: bytes) -> list[Any]:
    out = []
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: ") and block != b"data: [DONE]":
            out.append(orjson.loads(block[6:]))
    return out


def _accumulate(raw: bytes) -> dict[str, Any]:
    """What the openai SDK would assemble from a chunk stream."""
    text, calls, finish, usage = "", {}, None, None
    for doc in _sse_docs(raw):
        if doc.get("usage"):
            usage = doc["usage"]
        for choice in doc["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] = call.get("id") or entry["id"]
                function = call.get("function") or {}
                entry["name"] += function.get("name") or ""
                entry["arguments"] += function.get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return {
        "text": text,
        "calls": [calls[i] for i in sorted(calls)],
        "finish": finish,
        "usage": usage,
    }


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _run(parts: list[bytes], include_usage: bool = True) -> tuple[bytes, list[Usage]]:
    seen: list[Usage] = []
    translator = ConverseToChatStream(
        model=MODEL, include_usage=include_usage, on_usage=seen.append, id_="c", created=1
    )

    async def collect() -> bytes:
        return b"".join([c async for c in converse_stream_to_chat(_chunks(parts), translator)])

    return asyncio.run(collect()), seen


def _frames(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(event_frame(name, payload) for name, payload in events)


def test_stream_translates_role_text_tools_finish_usage_done() -> None:
    usage = {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19}
    events = _converse_events(
        ["Hel", "lo"], [("get_weather", '{"city":"Oslo"}')], "tool_use", usage
    )
    raw, seen = _run([_frames(events)])
    docs = _sse_docs(raw)
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert raw.endswith(b"data: [DONE]\n\n")
    assert docs[-1]["choices"] == [] and docs[-1]["usage"]["completion_tokens"] == 7
    got = _accumulate(raw)
    assert got["text"] == "Hello" and got["finish"] == "tool_calls"
    assert got["calls"] == [
        {"id": "tooluse_0", "name": "get_weather", "arguments": '{"city":"Oslo"}'}
    ]
    assert seen == [Usage(input_tokens=12, output_tokens=7)]
    # Without include_usage: no usage chunk, but usage still reported.
    raw, seen = _run([_frames(events)], include_usage=False)
    assert all(doc.get("usage") is None for doc in _sse_docs(raw)) and seen


def test_exception_frame_before_content_is_an_http_error_after_content_a_stream_error() -> None:
    start = event_frame("messageStart", {"role": "assistant"})
    with pytest.raises(UpstreamHTTPError) as info:
        _run([start + exception_frame("throttlingException", "Too many requests")])
    assert info.value.status == 429 and info.value.retryable
    assert orjson.loads(info.value.body) == {"message": "Too many requests"}
    assert (
        "x-amzn-ErrorType",
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
    ) in info.value.headers
    delta = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
    with pytest.raises(BedrockStreamError, match="internalServerException mid-stream: boom"):
        _run([start + delta + exception_frame("internalServerException", "boom")])


def test_truncated_and_corrupt_streams_raise_translation_errors() -> None:
    frames = _frames(
        _converse_events(["Hi"], [], "end_turn", {"inputTokens": 1, "outputTokens": 1})
    )
    with pytest.raises(TranslationError, match="ended inside an event-stream frame"):
        _run([frames[:-5]])
    with pytest.raises(TranslationError, match="before its messageStop"):
        _run([frames[: len(event_frame("messageStart", {"role": "assistant"}))]])
    corrupt = bytearray(frames)
    corrupt[-1] ^= 0xFF
    with pytest.raises(TranslationError, match="corrupt event-stream frame"):
        _run([bytes(corrupt)])


def test_simulator_encoder_is_read_by_botocore() -> None:
    frame = encode_frame({":event-type": "messageStop", ":message-type": "event"}, b'{"a":1}')
    buffer = EventStreamBuffer()
    buffer.add_data(frame + frame)
    messages = list(buffer)
    assert len(messages) == 2
    assert messages[0].headers == {":event-type": "messageStop", ":message-type": "event"}
    assert messages[0].payload == b'{"a":1}'
    reader = EventStreamReader()
    assert [e.name for e in reader.feed(frame[:10])] == []
    assert [e.payload for e in reader.feed(frame[10:])] == [{"a": 1}]


def test_model_ids_are_one_encoded_path_segment() -> None:
    assert converse_url("https://h", MODEL, stream=False) == (
        "https://h/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    )
    arn = "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-x-v1:0"
    assert converse_url("https://h", arn, stream=True) == (
        "https://h/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2F"
        "us.anthropic.claude-x-v1%3A0/converse-stream"
    )


# --------------------------------------------------------------------------- properties

_text = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != "")
_args = st.dictionaries(
    st.text(min_size=1, max_size=5),
    st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=8)),
    max_size=3,
)
_usage = st.fixed_dictionaries(
    {"inputTokens": st.integers(0, 10_000), "outputTokens": st.integers(0, 10_000)},
    optional={
        "cacheReadInputTokens": st.integers(0, 10_000),
        "cacheWriteInputTokens": st.integers(0, 10_000),
    },
)
_stop = st.sampled_from(
    ["end_turn", "stop_sequence", "max_tokens", "tool_use", "guardrail_intervened"]
)


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(_text, max_size=6),
    tools=st.lists(st.tuples(st.sampled_from(["a", "get_weather"]), _args), max_size=3),
    stop=_stop,
    usage=_usage,
)
def test_stream_and_complete_answers_translate_alike(
    texts: list[str], tools: list[tuple[str, dict[str, Any]]], stop: str, usage: dict[str, int]
) -> None:
    """The chat stream of a ConverseStream assembles to the chat completion of the same
    answer given complete (text, tool calls, finish reason, usage)."""
    encoded = [(name, orjson.dumps(args).decode()) for name, args in tools]
    raw, _ = _run([_frames(_converse_events(texts, encoded, stop, usage))])
    content: list[dict[str, Any]] = [{"text": "".join(texts)}] if texts else []
    content += [
        {"toolUse": {"toolUseId": f"tooluse_{k}", "name": name, "input": args}}
        for k, (name, args) in enumerate(tools)
    ]
    doc = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage,
    }
    chat = converse_response_to_chat(doc, model=MODEL)
    message = chat["choices"][0]["message"]
    got = _accumulate(raw)
    assert got["text"] == (message["content"] or "")
    assert got["finish"] == chat["choices"][0]["finish_reason"]
    assert got["usage"] == chat["usage"]
    assert [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in message.get("tool_calls") or ()
    ] == got["calls"]


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(_text, max_size=5),
    tools=st.lists(st.tuples(st.just("t"), _args), max_size=2),
    usage=_usage,
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_any_chunking_of_the_event_stream_decodes_to_the_same_chat_stream(
    texts: list[str],
    tools: list[tuple[str, dict[str, Any]]],
    usage: dict[str, int],
    cuts: list[int],
) -> None:
    encoded = [(name, orjson.dumps(args).decode()) for name, args in tools]
    data = _frames(_converse_events(texts, encoded, "end_turn", usage))
    whole, _ = _run([data])
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    split, _ = _run(parts)
    assert split == whole


_role_turns = st.lists(
    st.one_of(
        st.tuples(st.just("user"), _text),
        st.tuples(st.just("assistant"), _text),
        st.tuples(st.just("tool_round"), st.lists(st.tuples(_text, _args), min_size=1, max_size=3)),
    ),
    min_size=1,
    max_size=8,
)


def _chat_messages(turns: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    n = 0
    for kind, value in turns:
        if kind != "tool_round":
            messages.append({"role": kind, "content": value})
            continue
        calls = []
        for result, args in value:
            n += 1
            calls.append(
                {
                    "id": f"call_{n}",
                    "type": "function",
                    "function": {"name": "t", "arguments": orjson.dumps(args).decode()},
                    "result": result,
                }
            )
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{k: v for k, v in c.items() if k != "result"} for c in calls],
            }
        )
        messages += [
            {"role": "tool", "tool_call_id": c["id"], "content": c["result"]} for c in calls
        ]
    return messages


def _back_to_chat(converse: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The Converse conversation read back as (role, item) pairs, one per content block."""
    out: list[tuple[str, Any]] = []
    for message in converse:
        for block in message["content"]:
            if "text" in block:
                out.append((message["role"], block["text"]))
            elif "toolUse" in block:
                use = block["toolUse"]
                out.append(("tool_call", (use["toolUseId"], use["name"], use["input"])))
            elif "toolResult" in block:
                result = block["toolResult"]
                out.append(("tool", (result["toolUseId"], result["content"][0]["text"])))
    return out


@settings(max_examples=80, deadline=None)
@given(turns=_role_turns)
def test_request_round_trip_keeps_every_turn_and_alternates(turns: list[tuple[str, Any]]) -> None:
    messages = _chat_messages(turns)
    body, dropped = chat_request_to_converse(
        {"messages": messages, "tools": [{"type": "function", "function": {"name": "t"}}]},
        model=MODEL,
    )
    assert dropped == ()
    converse = body["messages"]
    roles = [m["role"] for m in converse]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    expected: list[tuple[str, Any]] = []
    for m in messages:
        if m["role"] == "tool":
            expected.append(("tool", (m["tool_call_id"], m["content"])))
        elif m.get("tool_calls"):
            expected += [
                ("tool_call", (c["id"], "t", orjson.loads(c["function"]["arguments"])))
                for c in m["tool_calls"]
            ]
        else:
            expected.append((m["role"], m["content"]))
    assert _back_to_chat(converse) == expected
    # toolResult blocks ride in user turns; toolUse blocks in assistant turns.
    for message in converse:
        for block in message["content"]:
            if "toolResult" in block:
                assert message["role"] == "user"
            if "toolUse" in block:
                assert message["role"] == "assistant"
