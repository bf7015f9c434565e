"""Custom tools (free-form string input) and Codex's ``additional_tools`` through the chat hub:
the request's tools wherever declared become chat function tools (a custom one takes
``{"input": <string>}``), the history's custom tool calls and outputs become tool calls and
tool messages, and a chat call of a custom tool comes back as a ``custom_tool_call`` — complete
or streamed — that the official openai SDK's types accept."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from openai.types.responses import (
    Response,
    ResponseCustomToolCall,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseCustomToolCallInputDoneEvent,
)
from test_formats_responses_api import USAGE_CHUNK, _chunk, _completion, sdk_events, translate

from tollway import BadRequest
from tollway.formats import (
    ChatToResponsesStream,
    chat_request_to_messages,
    chat_response_to_responses,
    responses_request_to_chat,
)
from tollway.formats.responses_tools import (
    CUSTOM_INPUT_DESCRIPTION,
    custom_tool_input,
    custom_tool_names,
)

GRAMMAR = 'start: "run " CMD\nCMD: /[a-z ]+/'
#: The input schema of every custom tool's chat function.
INPUT_ONLY = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": CUSTOM_INPUT_DESCRIPTION}},
    "required": ["input"],
    "additionalProperties": False,
}
WAIT_PARAMS = {
    "type": "object",
    "properties": {"cell_id": {"type": "string"}},
    "required": ["cell_id"],
    "additionalProperties": False,
}
SLEEP_PARAMS = {"type": "object", "properties": {"duration_ms": {"type": "number"}}}

#: A turn shaped like Codex 0.169's with its default model (tests/agents/data has the captures):
#: the tools in an ``additional_tools`` item of namespaces, ``exec`` a custom tool with a Lark
#: grammar, the earlier call of it and its output in the history.
CODEX_TURN: dict[str, Any] = {
    "model": "gpt-6.1-sol",
    "stream": True,
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "store": False,
    "input": [
        {
            "type": "additional_tools",
            "id": "at_01",
            "role": "developer",
            "tools": [
                {
                    "type": "namespace",
                    "name": "functions",
                    "description": "",
                    "tools": [
                        {
                            "type": "custom",
                            "name": "exec",
                            "description": "Runs JavaScript.",
                            "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR},
                        },
                        {
                            "type": "function",
                            "name": "wait",
                            "description": "Waits for a cell.",
                            "strict": False,
                            "parameters": WAIT_PARAMS,
                        },
                    ],
                },
                {
                    "type": "namespace",
                    "name": "clock",
                    "description": "Time.",
                    "tools": [
                        {
                            "type": "function",
                            "name": "sleep",
                            "description": "Sleeps.",
                            "strict": False,
                            "parameters": SLEEP_PARAMS,
                        }
                    ],
                },
            ],
        },
        {
            "type": "message",
            "id": "msg_1",
            "role": "developer",
            "content": [{"type": "input_text", "text": "You are Codex."}],
        },
        {
            "type": "message",
            "id": "msg_2",
            "role": "user",
            "content": [{"type": "input_text", "text": "List the files."}],
        },
        {
            "type": "custom_tool_call",
            "id": "ctc_1",
            "status": "completed",
            "call_id": "call_1",
            "name": "exec",
            "input": 'text(await run("ls -a"))\n// "quoted" \\ back',
        },
        {
            "type": "custom_tool_call_output",
            "id": "ctco_1",
            "call_id": "call_1",
            "output": [
                {"type": "input_text", "text": "a.txt\n"},
                {"type": "input_text", "text": "b.txt"},
            ],
        },
    ],
}


# --------------------------------------------------------------------------- requests


def test_a_codex_turn_with_additional_tools_keeps_its_tools_and_custom_calls() -> None:
    body, dropped = responses_request_to_chat(CODEX_TURN, model="claude-x")
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "exec",
                "description": f"Runs JavaScript.\n\nThe input must follow this lark grammar:\n"
                f"{GRAMMAR}",
                "parameters": INPUT_ONLY,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "wait",
                "description": "Waits for a cell.",
                "parameters": WAIT_PARAMS,
                "strict": False,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "sleep",
                "description": "Sleeps.",
                "parameters": SLEEP_PARAMS,
                "strict": False,
            },
        },
    ]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is False
    call_input = CODEX_TURN["input"][3]["input"]
    assert body["messages"] == [
        {"role": "system", "content": "You are Codex."},
        {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "exec",
                        "arguments": orjson.dumps({"input": call_input}).decode(),
                    },
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": [{"type": "text", "text": "a.txt\n"}, {"type": "text", "text": "b.txt"}],
        },
    ]
    # No message for the additional_tools item, nothing about it or the custom tool dropped:
    # only the namespace's description (chat has no tool groups).
    assert dropped == ("tools.namespace.description",)
    # The arguments decode back to the input exactly.
    arguments = body["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert custom_tool_input(arguments) == call_input
    # The Messages lane (a Claude model) takes it as it is.
    messages, lane_dropped = chat_request_to_messages(body, model="claude", default_max_tokens=9)
    assert lane_dropped == ()
    assert [t["name"] for t in messages["tools"]] == ["exec", "wait", "sleep"]
    assert messages["tools"][0]["input_schema"] == INPUT_ONLY
    tool_use = messages["messages"][1]["content"][0]
    assert tool_use == {
        "type": "tool_use",
        "id": "call_1",
        "name": "exec",
        "input": {"input": call_input},
    }
    assert custom_tool_names(CODEX_TURN) == {"exec"}


def test_custom_tools_in_tools_duplicates_and_the_custom_tool_choice() -> None:
    request: dict[str, Any] = {
        "model": "m",
        "input": [
            {
                "type": "additional_tools",
                "tools": [{"type": "function", "name": "patch"}],  # declared again: dropped
            },
            {"role": "user", "content": "fix it"},
        ],
        "tools": [
            {"type": "custom", "name": "patch", "description": "Applies a patch."},
            {"type": "custom", "name": "note", "format": {"type": "text"}},
            {
                "type": "custom",
                "name": "digits",
                "format": {"type": "grammar", "syntax": "regex", "definition": r"\d+"},
                "defer_loading": True,
            },
            {"type": "web_search"},
        ],
        "tool_choice": {"type": "custom", "name": "patch"},
    }
    body, dropped = responses_request_to_chat(request, model="m")
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "patch",
                "description": "Applies a patch.",
                "parameters": INPUT_ONLY,
            },
        },
        {"type": "function", "function": {"name": "note", "parameters": INPUT_ONLY}},
        {
            "type": "function",
            "function": {
                "name": "digits",
                "description": "The input must follow this regex grammar:\n\\d+",
                "parameters": INPUT_ONLY,
            },
        },
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "patch"}}
    assert body["messages"] == [{"role": "user", "content": "fix it"}]
    assert dropped == ("tools.defer_loading", "tools.web_search", "input[0].tools[0]")
    # The first declaration wins on the way back too.
    assert custom_tool_names(request) == {"patch", "note", "digits"}
    request["tools"].insert(0, {"type": "function", "name": "patch"})
    assert custom_tool_names(request) == {"note", "digits"}


def test_allowed_tools_narrow_custom_tools_too() -> None:
    body, dropped = responses_request_to_chat(
        {
            "model": "m",
            "input": "go",
            "tools": [
                {"type": "custom", "name": "a"},
                {"type": "function", "name": "b"},
                {"type": "custom", "name": "c"},
            ],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "custom", "name": "a"}, {"type": "function", "name": "b"}],
            },
        },
        model="m",
    )
    assert [t["function"]["name"] for t in body["tools"]] == ["a", "b"]
    assert body["tool_choice"] == "auto" and dropped == ()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "additional_tools", "tools": {}}]}, "input[0]"),
        ({"input": [{"type": "additional_tools", "tools": [7]}]}, "input[0].tools[0]"),
        (
            {"input": [{"type": "additional_tools", "tools": [{"type": "namespace"}]}]},
            "input[0].tools[0]",
        ),
        (
            {"input": "x", "tools": [{"type": "namespace", "tools": [{"type": "custom"}]}]},
            "tools[0].tools[0]",
        ),
        (
            {
                "input": "x",
                "tools": [{"type": "custom", "name": "c", "format": {"type": "grammar"}}],
            },
            "tools[0]",
        ),
        ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "n"}]}, "input[0]"),
        ({"input": [{"type": "custom_tool_call", "input": "", "name": "n"}]}, "input[0]"),
        ({"input": [{"type": "custom_tool_call_output", "output": "x"}]}, "input[0]"),
        ({"input": [{"type": "custom_tool_call_output", "call_id": "c", "output": 1}]}, "input[0]"),
    ],
)
def test_malformed_custom_tools_and_items_are_a_400(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as err:
        responses_request_to_chat({"model": "m", **body}, model="m")
    assert err.value.param == param


def test_custom_tool_names_takes_any_shape() -> None:
    assert custom_tool_names(None) == frozenset()
    for request in (
        {"tools": "x", "input": "y"},
        {"tools": [None, {"type": ["custom"]}, {"type": "custom", "name": 3}], "input": [1]},
        {"input": [{"type": "additional_tools", "tools": [{"type": "namespace", "tools": 5}]}]},
    ):
        assert custom_tool_names(request) == frozenset()


# --------------------------------------------------------------------------- complete answers


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_a_custom_tool_call_comes_back_as_a_custom_tool_call() -> None:
    code = 'text("ok")\n'
    doc = _completion(
        {
            "role": "assistant",
            "content": "Running it.",
            "tool_calls": [
                _call("call_1", "exec", json.dumps({"input": code})),
                _call("call_2", "wait", '{"cell_id":"1"}'),
                _call("call_3", "exec", "not json"),
            ],
        },
        "tool_calls",
    )
    out = chat_response_to_responses(doc, request=CODEX_TURN)
    response = Response.model_validate(out)
    assert [o.type for o in response.output] == [
        "message",
        "custom_tool_call",
        "function_call",
        "custom_tool_call",
    ]
    call = response.output[1]
    assert isinstance(call, ResponseCustomToolCall)
    assert (call.call_id, call.name, call.input) == ("call_1", "exec", code)
    assert call.id is not None and call.id.startswith("ctc_")
    assert out["output"][1]["status"] == "completed"
    assert response.output[2].type == "function_call"
    assert response.output[2].arguments == '{"cell_id":"1"}'
    # Arguments that are not an object with an input string: the input is the arguments.
    assert response.output[3].input == "not json"  # type: ignore[union-attr]
    # A request with its custom tool in tools, chosen: echoed as the SDK's types say.
    exec_tool = CODEX_TURN["input"][0]["tools"][0]["tools"][0]
    request = {
        "input": "go",
        "tools": [exec_tool],
        "tool_choice": {"type": "custom", "name": "exec"},
    }
    echoed = Response.model_validate(chat_response_to_responses(doc, request=request))
    assert echoed.tools[0].type == "custom" and echoed.tool_choice.type == "custom"  # type: ignore[union-attr]
    assert [o.type for o in echoed.output] == [o.type for o in response.output]
    # Without the request, nothing is known to be custom: function calls as before.
    plain = Response.model_validate(chat_response_to_responses(doc))
    assert [o.type for o in plain.output][1:] == ["function_call"] * 3


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"input": "a\\"b"}', 'a"b'),
        ('{"input": "x", "other": 1}', "x"),
        ('{"input": 5}', '{"input": 5}'),
        ('["x"]', '["x"]'),
        ("", ""),
        ('{"input": "trunc', '{"input": "trunc'),
    ],
)
def test_custom_tool_input(arguments: str, expected: str) -> None:
    assert custom_tool_input(arguments) == expected


# --------------------------------------------------------------------------- streams


def _tool_chunks(index: int, call_id: str, name: str, pieces: list[str]) -> bytes:
    first = {"index": index, "id": call_id, "type": "function", "function": {"name": name}}
    out = _chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]})
    for piece in pieces:
        out += _chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return out


def test_a_custom_tool_call_stream() -> None:
    code = 'text("héllo\\n")'
    arguments = json.dumps({"input": code})
    raw = (
        _chunk({"role": "assistant", "content": "Running."})
        + _tool_chunks(0, "call_1", "exec", [arguments[:5], arguments[5:13], arguments[13:]])
        + _tool_chunks(1, "call_2", "wait", ['{"cell_id":', '"1"}'])
        + _chunk({}, "tool_calls")
        + USAGE_CHUNK
    )
    events = sdk_events(translate(raw, ChatToResponsesStream(request=CODEX_TURN)))
    custom = [e for e in events if getattr(e, "output_index", None) == 1]
    assert [e.type for e in custom] == [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
    ]
    added, delta, done, item_done = custom
    assert added.item.type == "custom_tool_call" and added.item.input == ""
    assert added.item.name == "exec" and added.item.call_id == "call_1"
    assert isinstance(delta, ResponseCustomToolCallInputDeltaEvent)
    assert isinstance(done, ResponseCustomToolCallInputDoneEvent)
    assert delta.item_id == done.item_id == added.item.id == item_done.item.id
    assert delta.delta == done.input == item_done.item.input == code
    # The function call after it keeps its own events.
    function = [e.type for e in events if getattr(e, "output_index", None) == 2]
    assert function == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    final = events[-1].response
    assert [o.type for o in final.output] == ["message", "custom_tool_call", "function_call"]
    assert final.output[1].input == code and final.output[1].call_id == "call_1"
    assert final.output[2].arguments == '{"cell_id":"1"}'


def test_a_custom_tool_call_with_no_input_has_no_delta() -> None:
    raw = _tool_chunks(0, "call_1", "exec", ['{"input":""}']) + _chunk({}, "tool_calls")
    events = sdk_events(translate(raw + USAGE_CHUNK, ChatToResponsesStream(request=CODEX_TURN)))
    types = [e.type for e in events]
    assert "response.custom_tool_call_input.delta" not in types
    done = next(e for e in events if e.type == "response.custom_tool_call_input.done")
    assert done.input == "" and events[-1].response.output[0].input == ""
