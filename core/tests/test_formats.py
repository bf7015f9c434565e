"""Chat ↔ Messages translation: examples, recorded provider streams, and the official SDKs'
own stream accumulators as the judge of what a client would see."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from anthropic._streaming import SSEDecoder as AnthropicSSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from openai._streaming import SSEDecoder as OpenAISSEDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from tollway import BadRequest, RequestContext, Usage
from tollway.formats import (
    PARAMS_DROPPED_HEADER,
    ChatToMessagesStream,
    MessagesToChatStream,
    StreamTranslator,
    TranslationError,
    chat_request_to_messages,
    chat_response_to_messages,
    forget_dropped,
    messages_request_to_chat,
    messages_response_to_chat,
    reframe_sse,
    report_dropped,
)

FIXTURES = (
    Path(__file__).parents[2] / "plugins" / "simulator" / "src" / "tollway_simulator" / "fixtures"
)
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


# --------------------------------------------------------------------------- helpers


async def _chunks(data: bytes, cuts: Iterable[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        if start < cut < len(data):
            yield data[start:cut]
            start = cut
    yield data[start:]


def translate(data: bytes, translator: StreamTranslator, cuts: Iterable[int] = ()) -> bytes:
    """Run ``data`` (upstream SSE bytes, cut at ``cuts``) through ``reframe_sse``."""

    async def run() -> bytes:
        return b"".join([c async for c in reframe_sse(_chunks(data, cuts), translator)])

    return asyncio.run(run())


def openai_final(raw: bytes) -> tuple[Any, bool]:
    """What the openai SDK accumulates from ``raw`` (and whether it saw ``[DONE]``)."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    done = False
    for sse in OpenAISSEDecoder().iter_bytes(iter([raw])):
        if sse.data.startswith("[DONE]"):
            done = True
            break
        data = sse.json()
        assert not data.get("error"), data
        state.handle_chunk(ChatCompletionChunk.model_validate(data))
    return state.current_completion_snapshot, done


def anthropic_final(raw: bytes) -> Any:
    """What the anthropic SDK accumulates from ``raw`` (events without ``event:`` are dropped,
    exactly as the SDK does)."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    names = []
    for sse in AnthropicSSEDecoder().iter_bytes(iter([raw])):
        if sse.event is None or sse.event == "ping":
            continue
        assert sse.event != "error", sse.data
        names.append(sse.event)
        snapshot = accumulate_event(event=sse.json(), current_snapshot=snapshot, json_bufs=bufs)
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    return snapshot


def ctx() -> RequestContext:
    return RequestContext(
        request_id="grq_test",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 32,
        span_id="0" * 16,
    )


# --------------------------------------------------------------------------- chat → messages


def test_chat_request_full_mapping() -> None:
    body = {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://e.x/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "9"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            },
            {"type": "function", "function": {"name": "time"}},
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 100,
        "max_completion_tokens": 50,
        "stop": "END",
        "temperature": 0.5,
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "n": 1,
        "seed": 7,
        "presence_penalty": 0.3,
        "response_format": {"type": "json_object"},
    }
    out, dropped = chat_request_to_messages(body, model="claude-sonnet-4-5")
    assert out["model"] == "claude-sonnet-4-5"
    assert out["max_tokens"] == 50  # max_completion_tokens wins
    assert out["system"] == [
        {"type": "text", "text": "Be terse."},
        {"type": "text", "text": "Use tools."},
    ]
    user, assistant, results, thanks = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert user["content"][2]["source"] == {"type": "url", "url": "https://e.x/a.jpg"}
    assert assistant["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
    ]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "rain"},
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": [{"type": "text", "text": "9"}],
            },
        ],
    }
    assert thanks == {"role": "user", "content": "Thanks"}
    assert out["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    assert out["tools"][1] == {
        "name": "time",
        "input_schema": {"type": "object", "properties": {}},
    }
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["stop_sequences"] == ["END"]
    assert out["temperature"] == 0.5
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["stream"] is True and "stream_options" not in out
    # n=1 is the default: not reported.
    assert dropped == ("seed", "presence_penalty", "response_format")


def test_chat_request_without_max_tokens_is_400_naming_it() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(BadRequest) as info:
        chat_request_to_messages(body, model="claude-haiku-4-5")
    assert "max_tokens" in info.value.message and info.value.param == "max_tokens"
    out, _ = chat_request_to_messages(body, model="claude-haiku-4-5", default_max_tokens=64)
    assert out["max_tokens"] == 64


@pytest.mark.parametrize(
    ("sampling", "kept", "dropped"),
    [
        ("all", {"temperature", "top_p", "top_k"}, ()),
        ("one", {"temperature", "top_k"}, ("top_p",)),
        ("none", set(), ("temperature", "top_p", "top_k")),
    ],
)
def test_sampling_rules(sampling: Any, kept: set[str], dropped: tuple[str, ...]) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
    }
    out, reported = chat_request_to_messages(body, model="c", sampling=sampling)
    assert {k for k in ("temperature", "top_p", "top_k") if k in out} == kept
    assert reported == dropped


def test_chat_request_refuses_what_cannot_be_meant() -> None:
    def call(messages: list[Any]) -> None:
        chat_request_to_messages({"messages": messages, "max_tokens": 1}, model="c")

    with pytest.raises(BadRequest, match="arguments"):
        call(
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "function": {"name": "f", "arguments": "[1, 2]"}},
                    ],
                }
            ]
        )
    with pytest.raises(BadRequest, match="tool_call_id"):
        call([{"role": "tool", "content": "x"}])
    with pytest.raises(BadRequest, match="base64"):
        call(
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,xx"}}],
                }
            ]
        )
    with pytest.raises(BadRequest, match="function"):
        call([{"role": "function", "name": "f", "content": "x"}])


def test_chat_request_reports_unknown_parts_and_keeps_cache_control() -> None:
    body = {
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "name": "bob",
                "content": [
                    {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                    {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                ],
            }
        ],
        "tools": [{"type": "custom", "custom": {"name": "x"}}],
        "logprobs": False,
        "logit_bias": {"1": 2},
    }
    out, dropped = chat_request_to_messages(body, model="c")
    assert out["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert "tools" not in out
    assert dropped == (
        "logit_bias",
        "messages.name",
        "content.input_audio",
        "image_url.detail",
        "tools.custom",
    )


# --------------------------------------------------------------------------- messages → chat


def test_messages_request_full_mapping() -> None:
    body = {
        "model": "gpt-x",
        "max_tokens": 200,
        "system": [
            {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Use tools."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1]}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"},
                    {"type": "text", "text": "and?"},
                ],
            },
            {"role": "system", "content": "late system"},
        ],
        "tools": [
            {"name": "f", "description": "F", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        "stop_sequences": ["a", "b", "c", "d", "e"],
        "temperature": 0.3,
        "top_k": 3,
        "metadata": {"user_id": "u-9"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stream": True,
    }
    out, dropped = messages_request_to_chat(body, model="gpt-4o")
    assert out["model"] == "gpt-4o"
    assert out["max_completion_tokens"] == 200
    assert out["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": "Use tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Calling.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":[1]}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "done"},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]},
        {"role": "system", "content": "late system"},
    ]
    assert out["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "F", "parameters": {"type": "object"}},
        }
    ]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["parallel_tool_calls"] is False
    assert out["stop"] == ["a", "b", "c", "d"]
    assert out["temperature"] == 0.3
    assert out["user"] == "u-9"
    assert out["stream_options"] == {"include_usage": True}
    assert set(dropped) == {
        "top_k",
        "thinking",
        "cache_control",
        "tools.web_search_20250305",
        "stop_sequences",
    }


def test_messages_request_for_reasoning_models_and_compatible_servers() -> None:
    body = {
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.1,
        "top_p": 0.5,
        "stop_sequences": ["x"],
    }
    out, dropped = messages_request_to_chat(
        body, model="o4-mini", sampling="none", allow_stop=False
    )
    assert not {"temperature", "top_p", "stop"} & set(out)
    assert dropped == ("stop_sequences", "temperature", "top_p")
    out, dropped = messages_request_to_chat(body, model="llama", max_tokens_field="max_tokens")
    assert out["max_tokens"] == 10 and out["stop"] == ["x"] and not dropped


def test_long_claude_code_user_id_is_not_sent_as_openai_user() -> None:
    user_id = orjson.dumps({"device_id": "d" * 64, "session_id": "s" * 36}).decode()
    out, dropped = messages_request_to_chat(
        {"max_tokens": 1, "messages": [], "metadata": {"user_id": user_id}}, model="gpt-4o"
    )
    assert "user" not in out and dropped == ("metadata.user_id",)


def test_tool_result_images_follow_as_a_user_turn() -> None:
    body = {
        "max_tokens": 1,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "screenshot:"},
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://x/s.png"},
                            },
                        ],
                    }
                ],
            }
        ],
    }
    out, dropped = messages_request_to_chat(body, model="gpt-4o")
    assert out["messages"] == [
        {
            "role": "tool",
            "tool_call_id": "t1",
            "content": [{"type": "text", "text": "screenshot:"}],
        },
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/s.png"}}],
        },
    ]
    assert dropped == ("tool_result.is_error",)


# --------------------------------------------------------------------------- responses


def test_messages_response_to_chat_completion() -> None:
    doc = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [
            {"type": "thinking", "thinking": "…", "signature": "x"},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "x"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 3,
            "output_tokens": 7,
        },
    }
    out = messages_response_to_chat(doc, created=1)
    assert out["model"] == "claude-haiku-4-5-20251001" and out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Calling."
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"q":"x"}'}
    assert out["usage"]["prompt_tokens"] == 18
    assert out["usage"]["completion_tokens"] == 7
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}
    # Back again: the same meaning.
    back = chat_response_to_messages(out)
    assert back["content"] == [doc["content"][1], doc["content"][2]]
    assert back["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    doc = {"id": "m", "model": "c", "content": [], "stop_reason": stop, "usage": {}}
    assert messages_response_to_chat(doc)["choices"][0]["finish_reason"] == finish


def test_chat_completion_to_message() -> None:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi", "refusal": None},
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
    }
    out = chat_response_to_messages(doc)
    assert out["content"] == [{"type": "text", "text": "Hi"}]
    assert out["stop_reason"] == "max_tokens"
    assert out["usage"] == {
        "input_tokens": 36,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 64,
        "output_tokens": 2,
    }


# --------------------------------------------------------------------------- streams


ANTHROPIC_FIXTURES = sorted((FIXTURES / "anthropic-messages").glob("*.sse"))
OPENAI_FIXTURES = sorted((FIXTURES / "openai-chat").glob("*.sse"))


def _anthropic_text(raw: bytes) -> tuple[str, str | None, dict[str, Any] | None]:
    text, stop, usage = "", None, None
    for sse in AnthropicSSEDecoder().iter_bytes(iter([raw])):
        data = sse.json() if sse.data else {}
        if data.get("type") == "content_block_delta" and data["delta"]["type"] == "text_delta":
            text += data["delta"]["text"]
        if data.get("type") == "message_delta":
            stop, usage = data["delta"]["stop_reason"], data["usage"]
    return text, stop, usage


@pytest.mark.parametrize("path", ANTHROPIC_FIXTURES, ids=lambda p: p.name)
def test_recorded_anthropic_streams_reach_the_openai_sdk(path: Path) -> None:
    raw = path.read_bytes()
    if not raw.endswith(b"\n\n"):
        raw = raw.rstrip(b"\n") + b"\n\n"
    usages: list[Usage] = []
    out = translate(
        raw, MessagesToChatStream(include_usage=True, on_usage=usages.append), range(7, 9999, 61)
    )
    completion, done = openai_final(out)
    text, stop, _ = _anthropic_text(raw)
    assert done
    assert (completion.choices[0].message.content or "") == text
    assert completion.choices[0].finish_reason == {
        "end_turn": "stop",
        "refusal": "content_filter",
        "max_tokens": "length",
    }.get(stop or "", "stop")
    assert completion.usage is not None
    assert usages and completion.usage.completion_tokens == usages[-1].output_tokens
    assert not completion.choices[0].message.tool_calls  # server tools are not chat tool calls


@pytest.mark.parametrize("path", OPENAI_FIXTURES, ids=lambda p: p.name)
def test_recorded_openai_streams_reach_the_anthropic_sdk(path: Path) -> None:
    raw = path.read_bytes()
    message = anthropic_final(translate(raw, ChatToMessagesStream(), range(5, 9999, 47)))
    expected, _ = openai_final(raw)
    choice = expected.choices[0]
    texts = "".join(b.text for b in message.content if b.type == "text")
    assert texts == (choice.message.content or "") + (choice.message.refusal or "")
    calls = [b for b in message.content if b.type == "tool_use"]
    assert [(c.id, c.name, c.input) for c in calls] == [
        (t.id, t.function.name, orjson.loads(t.function.arguments))
        for t in choice.message.tool_calls or []
    ]
    assert message.stop_reason == (
        "refusal"
        if choice.message.refusal
        else {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[
            choice.finish_reason
        ]
    )
    if expected.usage is not None:
        assert message.usage.output_tokens == expected.usage.completion_tokens


def test_usage_chunk_only_when_the_client_asked() -> None:
    raw = (FIXTURES / "anthropic-messages" / "basic_response.sse").read_bytes() + b"\n\n"
    out = translate(raw, MessagesToChatStream(include_usage=False))
    assert b'"choices":[]' not in out and out.endswith(b"data: [DONE]\n\n")


def test_streams_cut_short_raise_for_the_terminal_error_frame() -> None:
    raw = (FIXTURES / "anthropic-messages" / "basic_response.sse").read_bytes()
    cut = raw[: raw.index(b"event: message_delta")]
    with pytest.raises(TranslationError, match="message_stop"):
        translate(cut, MessagesToChatStream())
    chat = (FIXTURES / "openai-chat" / "plain-text-stop.sse").read_bytes()
    with pytest.raises(TranslationError, match="finish_reason"):
        translate(chat[: len(chat) // 2].rsplit(b"\n\n", 1)[0] + b"\n\n", ChatToMessagesStream())
    with pytest.raises(TranslationError, match="not valid JSON"):
        translate(b'data: {"choices":[{"delta":{"content":"x\n\n', ChatToMessagesStream())


def test_openai_stream_without_done_or_usage_still_closes() -> None:
    chunk = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    finish = {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    raw = b"data: " + orjson.dumps(chunk) + b"\n\ndata: " + orjson.dumps(finish) + b"\n\n"
    message = anthropic_final(translate(raw, ChatToMessagesStream()))
    assert message.content[0].text == "hi" and message.stop_reason == "end_turn"


def test_stream_without_usage_chunk_takes_the_fallback_usage() -> None:
    """An adapter that accounted usage on ctx.usage but sent no usage chunk: the Anthropic
    client's message_delta carries those numbers, not zeros; a usage chunk still wins."""
    chunk = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    finish = {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    raw = b"data: " + orjson.dumps(chunk) + b"\n\ndata: " + orjson.dumps(finish) + b"\n\n"
    accounted = Usage(input_tokens=7, output_tokens=3)
    message = anthropic_final(
        translate(raw + b"data: [DONE]\n\n", ChatToMessagesStream(fallback_usage=lambda: accounted))
    )
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    assert anthropic_final(translate(raw, ChatToMessagesStream())).usage.output_tokens == 0
    shown = {
        "id": "c",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    raw += b"data: " + orjson.dumps(shown) + b"\n\n"
    message = anthropic_final(
        translate(raw, ChatToMessagesStream(fallback_usage=lambda: accounted))
    )
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 2)


def test_upstream_error_events_stay_errors_for_either_sdk() -> None:
    anthropic_error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )
    start = (FIXTURES / "anthropic-messages" / "basic_response.sse").read_bytes().split(b"\n\n")[0]
    out = translate(start + b"\n\n" + anthropic_error, MessagesToChatStream())
    assert out.endswith(anthropic_error)  # {"error": …}: the openai SDK raises APIError
    openai_error = b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
    first = (FIXTURES / "openai-chat" / "plain-text-stop.sse").read_bytes().split(b"\n\n")[0]
    out = translate(first + b"\n\n" + openai_error, ChatToMessagesStream())
    events = list(AnthropicSSEDecoder().iter_bytes(iter([out])))
    assert events[-1].event == "error" and events[-1].json()["error"]["message"] == "boom"


def test_every_translated_anthropic_event_is_named() -> None:
    raw = (FIXTURES / "openai-chat" / "one-tool-call.sse").read_bytes()
    out = translate(raw, ChatToMessagesStream())
    blocks = [b for b in out.split(b"\n\n") if b]
    assert all(b.startswith(b"event: ") for b in blocks)


# --------------------------------------------------------------------------- dropped header


def test_dropped_header_follows_the_attempt() -> None:
    c = ctx()
    report_dropped(c, ("seed", "n"))
    assert c.response_headers[PARAMS_DROPPED_HEADER] == "seed,n"
    forget_dropped(c)  # a later native attempt answered
    assert PARAMS_DROPPED_HEADER not in c.response_headers
    c.response_headers[PARAMS_DROPPED_HEADER] = "someone-else"
    forget_dropped(c)
    assert c.response_headers[PARAMS_DROPPED_HEADER] == "someone-else"
