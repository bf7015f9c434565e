"""Property tests of custom tools through the chat hub: any custom tool input, cut into any
fragments, comes back exactly (complete, streamed, and through the Messages lane); any tool
declaration translates or is a 400."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import Response
from test_formats_props import SETTINGS, _split, build_anthropic_stream, json_value
from test_formats_responses_api import USAGE_CHUNK, _chunk, _completion
from test_formats_responses_custom_tools import _call, _tool_chunks
from test_formats_responses_props import _translate, sdk_final

from tollway import BadRequest
from tollway.formats import (
    ChatToResponsesStream,
    MessagesToChatStream,
    chat_response_to_responses,
    responses_request_to_chat,
)
from tollway.formats.responses_tools import custom_tool_names

#: Inputs a custom tool takes: any text, quotes, backslashes, newlines and unicode included.
tool_inputs = st.text() | st.text(alphabet=st.sampled_from('"\\\n\t\r/{}:, é€😀\x00\u2028'))


@SETTINGS
@given(tool_inputs, st.lists(st.integers(0, 400), max_size=8), st.lists(st.integers(0, 4000)))
def test_any_custom_tool_input_comes_back_exactly(
    s: str, points: list[int], cuts: list[int]
) -> None:
    """``json.dumps({"input": s})`` as chat arguments, cut into any fragments across chunks
    (and the stream's bytes cut anywhere): a ``custom_tool_call`` whose input is exactly s,
    streamed and not."""
    request = {"model": "m", "input": "go", "tools": [{"type": "custom", "name": "exec"}]}
    arguments = json.dumps({"input": s})
    doc = _completion(
        {"role": "assistant", "content": None, "tool_calls": [_call("call_1", "exec", arguments)]},
        "tool_calls",
    )
    complete = Response.model_validate(chat_response_to_responses(doc, request=request))
    assert [(o.type, o.input) for o in complete.output] == [("custom_tool_call", s)]  # type: ignore[union-attr]

    raw = (
        _chunk({"role": "assistant", "content": None})
        + _tool_chunks(0, "call_1", "exec", _split(arguments, points))
        + _chunk({}, "tool_calls")
        + USAGE_CHUNK
    )
    out = _translate(raw, cuts, ChatToResponsesStream(request=request))
    final = sdk_final(out)
    assert [(o.type, o.call_id, o.input) for o in final.response.output] == [
        ("custom_tool_call", "call_1", s)
    ]
    events = [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: ")]
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == s


@SETTINGS
@given(tool_inputs, st.lists(st.integers(0, 400), max_size=5), st.lists(st.integers(0, 4000)))
def test_a_messages_upstream_custom_call_reaches_the_sdk(
    s: str, points: list[int], cuts: list[int]
) -> None:
    """Through the Messages lane (a Claude model): a tool_use whose input ``{"input": s}``
    arrives in any input_json_delta fragments is a custom_tool_call with input s."""
    spec = {
        "text": "",
        "text_points": [],
        "tools": [("exec", {"input": s}, points)],
        "stop": "tool_use",
        "usage": (10, 0, 0, 5),
        "include_usage": True,
    }
    request = {"model": "m", "input": "go", "tools": [{"type": "custom", "name": "exec"}]}
    final = sdk_final(
        _translate(
            build_anthropic_stream(spec),
            cuts,
            MessagesToChatStream(include_usage=True),
            ChatToResponsesStream(request=request),
        )
    )
    assert [(o.type, o.call_id, o.input) for o in final.response.output] == [
        ("custom_tool_call", "toolu_0", s)
    ]


_KINDS = ["additional_tools", "namespace", "custom", "function", "custom_tool_call"]
_tool_shapes = st.recursive(
    st.dictionaries(
        st.sampled_from(["type", "name", "description", "format", "parameters", "input"]),
        json_value | st.sampled_from(_KINDS),
    ),
    lambda inner: st.builds(
        lambda kind, tools, extra: {**extra, "type": kind, "tools": tools},
        st.sampled_from(["namespace", "additional_tools"]),
        st.lists(inner, max_size=3) | json_value,
        st.dictionaries(st.sampled_from(["name", "description", "call_id"]), json_value),
    ),
    max_leaves=8,
)


@SETTINGS
@given(
    st.lists(_tool_shapes | st.sampled_from(["x", 1]), max_size=4),
    st.none() | st.lists(_tool_shapes, max_size=3) | json_value,
    st.none() | json_value | st.fixed_dictionaries({"type": st.sampled_from(_KINDS)}),
)
def test_any_tool_declaration_translates_or_is_a_400(items: Any, tools: Any, choice: Any) -> None:
    """Never another exception (a 500 for the client); the answer side reads any request."""
    body: dict[str, Any] = {"model": "m", "input": items, "tools": tools, "tool_choice": choice}
    custom = custom_tool_names(body)
    try:
        chat, _ = responses_request_to_chat(body, model="m")
    except BadRequest as exc:
        assert exc.param
        return
    names = [t["function"]["name"] for t in chat.get("tools", [])]
    assert len(names) == len(set(names)) and custom <= set(names)
