"""The OpenAI Responses API through the chat hub: examples of each rule, and what the official
openai SDK's own types and stream accumulator make of the translated answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from openai import omit
from openai._models import validate_type
from openai._streaming import SSEDecoder
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from tollway import BadRequest, Usage
from tollway.formats import (
    STATEFUL_PARAMS,
    TRANSLATED_RESPONSE_PREFIX,
    ChatToResponsesStream,
    NeedsStoredState,
    TranslationError,
    chat_request_to_messages,
    chat_response_to_responses,
    reframe_sse,
    responses_request_to_chat,
    responses_usage,
    usage_to_responses,
)

PNG_URL = "data:image/png;base64,iVBORw0KGgo="


# --------------------------------------------------------------------------- requests


def test_a_string_input_with_instructions() -> None:
    body, dropped = responses_request_to_chat(
        {
            "model": "client",
            "instructions": "be brief",
            "input": "hi",
            "max_output_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u1",
        },
        model="tiny-1",
    )
    assert body == {
        "model": "tiny-1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
    }
    assert dropped == ()


def test_items_become_messages_tool_calls_and_tool_messages() -> None:
    body, dropped = responses_request_to_chat(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "use tools"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is in "},
                        {"type": "input_image", "image_url": PNG_URL, "detail": "low"},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}],
                },
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_a",
                    "name": "look",
                    "arguments": '{"q":1}',
                },
                {"type": "function_call", "call_id": "call_b", "name": "look", "arguments": ""},
                {"type": "function_call_output", "call_id": "call_a", "output": "a cat"},
                {
                    "type": "function_call_output",
                    "call_id": "call_b",
                    "output": [
                        {"type": "input_text", "text": "see"},
                        {"type": "input_image", "image_url": "https://x/c.png"},
                    ],
                },
                {"role": "user", "content": "thanks"},
            ],
        },
        model="m",
    )
    assert body["messages"] == [
        {"role": "system", "content": "use tools"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in "},
                {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "look", "arguments": '{"q":1}'},
                },
                {"id": "call_b", "type": "function", "function": {"name": "look", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "a cat"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "see"}]},
        # OpenAI tool messages carry text only: the image follows as a user turn.
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/c.png"}}],
        },
        {"role": "user", "content": "thanks"},
    ]
    assert dropped == ("input.reasoning",)
    # The chat request is one the Messages lane takes (Anthropic has no image detail).
    messages, dropped_again = chat_request_to_messages(body, model="claude", default_max_tokens=9)
    assert dropped_again == ("image_url.detail",)
    assert [m["role"] for m in messages["messages"]] == [
        "user",
        "assistant",
        "user",
        "user",
        "user",
    ]


def test_tools_choice_and_text_format() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string"}}}
    body, dropped = responses_request_to_chat(
        {
            "model": "m",
            "input": "go",
            "tools": [
                {
                    "type": "function",
                    "name": "f",
                    "description": "d",
                    "parameters": schema,
                    "strict": True,
                },
                {"type": "web_search"},
                {"type": "function", "name": "g", "parameters": None, "strict": False},
            ],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": False,
            "text": {
                "format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
            },
            "stream": True,
            "stream_options": {"include_obfuscation": False},
        },
        model="m",
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": schema, "strict": True},
        },
        {"type": "function", "function": {"name": "g", "strict": False}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert dropped == ("tools.web_search",)


def test_allowed_tools_narrow_the_tools() -> None:
    tools = [{"type": "function", "name": n} for n in ("a", "b", "c")]
    body, dropped = responses_request_to_chat(
        {
            "model": "m",
            "input": "go",
            "tools": tools,
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "b"}],
            },
        },
        model="m",
    )
    assert [t["function"]["name"] for t in body["tools"]] == ["b"]
    assert body["tool_choice"] == "required" and dropped == ()


def test_what_chat_has_no_place_for_is_dropped_and_reported() -> None:
    body, dropped = responses_request_to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": [{"type": "input_file", "file_url": "https://f"}]}
            ],
            "reasoning": {"effort": "high", "summary": "auto"},
            "include": ["reasoning.encrypted_content"],
            "store": True,
            "prompt_cache_key": "k",
            "text": {"verbosity": "low"},
            "tool_choice": "required",
            # Defaults and nulls change nothing: not reported.
            "parallel_tool_calls": True,
            "truncation": "disabled",
            "metadata": None,
            "background": False,
        },
        model="m",
    )
    assert "response_format" not in body and "tool_choice" not in body
    assert dropped == (
        "reasoning",
        "include",
        "store",
        "prompt_cache_key",
        "content.input_file",
        "tool_choice",
        "text.verbosity",
    )


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ],
)
def test_stored_state_cannot_be_honoured(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as err:
        responses_request_to_chat({"model": "m", "input": "hi", **extra}, model="m")
    assert isinstance(err.value, NeedsStoredState)  # the gateway skips to a native provider
    assert err.value.param == param
    assert "chat completions, which keep no state" in err.value.message
    # It says what to send instead.
    advice = STATEFUL_PARAMS.get(param, "send the item itself")
    assert err.value.message.endswith(advice)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 7}, "input"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0]"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0]"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0]"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0]"),
        ({"model": "m", "input": "x", "instructions": ["x"]}, "instructions"),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}},
            "text.format.schema",
        ),
    ],
)
def test_malformed_requests_are_a_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as err:
        responses_request_to_chat(body, model="m")
    assert err.value.param == param


# --------------------------------------------------------------------------- complete answers


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "tiny-1-2025",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "total_tokens": 107,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
    }


def test_a_completion_becomes_a_response_the_sdk_reads() -> None:
    request = {"model": "tiny-1", "input": "hi", "instructions": "be brief", "max_output_tokens": 9}
    doc = _completion(
        {
            "role": "assistant",
            "content": "Calling.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},
                }
            ],
        },
        "tool_calls",
    )
    out = chat_response_to_responses(doc, request=request)
    response = Response.model_validate(out)  # the SDK's own schema, strictly
    assert response.id.startswith(TRANSLATED_RESPONSE_PREFIX)
    assert response.object == "response" and response.status == "completed"
    assert response.model == "tiny-1-2025" and response.created_at == 1700000000
    assert response.output_text == "Calling."
    call = response.output[1]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "f", '{"a":1}')
    assert response.instructions == "be brief" and response.max_output_tokens == 9
    assert response.usage is not None
    assert response.usage.input_tokens == 100 and response.usage.output_tokens == 7
    assert response.usage.total_tokens == 107
    assert response.usage.input_tokens_details.cached_tokens == 64
    assert responses_usage(out["usage"]) == Usage(
        input_tokens=36, output_tokens=7, cache_read_input_tokens=64
    )


@pytest.mark.parametrize(
    ("finish", "status", "reason"),
    [
        ("stop", "completed", None),
        ("length", "incomplete", "max_output_tokens"),
        ("content_filter", "incomplete", "content_filter"),
    ],
)
def test_finish_reasons(finish: str, status: str, reason: str | None) -> None:
    out = chat_response_to_responses(_completion({"role": "assistant", "content": "x"}, finish))
    response = Response.model_validate(out)
    assert response.status == status
    assert (response.incomplete_details.reason if response.incomplete_details else None) == reason
    assert response.output[0].status == status


def test_a_refusal_is_a_refusal_part() -> None:
    out = chat_response_to_responses(
        _completion({"role": "assistant", "content": None, "refusal": "I can't."})
    )
    response = Response.model_validate(out)
    assert response.output[0].content[0].type == "refusal"
    assert response.output_text == ""


def test_usage_to_responses_counts_cache_writes_as_input() -> None:
    usage = Usage(
        input_tokens=10,
        output_tokens=3,
        cache_read_input_tokens=5,
        cache_creation_input_tokens=2,
        reasoning_tokens=1,
    )
    assert usage_to_responses(usage) == {
        "input_tokens": 17,
        "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 2},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 20,
    }


# --------------------------------------------------------------------------- streams


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "tiny-1-2025",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


USAGE_CHUNK = (
    b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":4,'
    b'"total_tokens":16}}\n\n'
)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def translate(data: bytes, translator: ChatToResponsesStream) -> bytes:
    async def run() -> bytes:
        return b"".join([c async for c in reframe_sse(_one(data), translator)])

    return asyncio.run(run())


def sdk_events(out: bytes) -> list[Any]:
    """The events as the openai SDK parses them, each checked against its schema, with the
    SDK's own ``responses.stream()`` accumulator fed on the way."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    events = []
    for sse in SSEDecoder().iter_bytes(iter([out])):
        data = sse.json()
        assert sse.event == data["type"], "every event is named after its type"
        event = validate_type(type_=ResponseStreamEvent, value=data)  # type: ignore[arg-type]
        state.handle_event(event)
        events.append(event)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def test_a_text_stream() -> None:
    usages: list[Usage] = []
    raw = (
        _chunk({"role": "assistant", "content": ""})
        + _chunk({"content": "Hel"})
        + _chunk({"content": "lo"})
        + _chunk({}, "stop")
        + USAGE_CHUNK
        + b"data: [DONE]\n\n"
    )
    out = translate(raw, ChatToResponsesStream(model="tiny-1", on_usage=usages.append))
    events = sdk_events(out)
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1].response
    assert final.output_text == "Hello" and final.status == "completed"
    assert final.model == "tiny-1-2025"
    assert final.usage.input_tokens == 12 and final.usage.output_tokens == 4
    assert usages == [Usage(input_tokens=12, output_tokens=4)]
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"


def test_a_tool_call_stream_closes_the_text_first() -> None:
    raw = (
        _chunk({"role": "assistant", "content": "Let me"})
        + _chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        )
        + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})
        + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]})
        + _chunk({}, "tool_calls")
        + USAGE_CHUNK
    )
    events = sdk_events(translate(raw, ChatToResponsesStream()))
    types = [e.type for e in events]
    assert types.index("response.output_item.done") < types.index(
        "response.function_call_arguments.delta"
    )
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == '{"a":1}'
    final = events[-1].response
    assert [o.type for o in final.output] == ["message", "function_call"]
    assert final.output[1].call_id == "call_1" and final.output[1].arguments == '{"a":1}'


def test_length_ends_incomplete_and_refusals_have_their_events() -> None:
    raw = (
        _chunk({"refusal": "No"})
        + _chunk({"refusal": "pe."})
        + _chunk({}, "length")
        + b"data: [DONE]\n\n"
    )
    events = sdk_events(translate(raw, ChatToResponsesStream()))
    assert "response.refusal.delta" in [e.type for e in events]
    final = events[-1]
    assert final.type == "response.incomplete"
    assert final.response.incomplete_details.reason == "max_output_tokens"
    assert final.response.output[0].content[0].refusal == "Nope."


def test_an_upstream_error_chunk_makes_the_sdk_raise() -> None:
    raw = (
        _chunk({"content": "a"})
        + b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    )
    out = translate(raw, ChatToResponsesStream())
    last = [sse.json() for sse in SSEDecoder().iter_bytes(iter([out]))][-1]
    assert last["type"] == "error" and last["message"] == "overloaded"
    assert last["error"]["message"] == "overloaded"  # the key the openai SDK raises APIError on


def test_a_stream_cut_before_its_finish_is_a_translation_error() -> None:
    with pytest.raises(TranslationError):
        translate(_chunk({"content": "a"}), ChatToResponsesStream())
