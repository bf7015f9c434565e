"""The public request helpers of ``tollway.formats`` that provider translators build on (data
URLs, text parts, tool-call arguments, dropped-parameter bookkeeping, message and tool
iteration, chat chunk writers): unit and property tests."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway import BadRequest, Usage, formats

SETTINGS = settings(max_examples=100, deadline=None)
media_type = st.from_regex(r"[a-z]{1,10}/[a-z0-9.+-]{1,12}", fullmatch=True)
json_scalar = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
json_object = st.dictionaries(st.text(max_size=6), json_value, max_size=4)


def _event(chunk: bytes) -> dict[str, Any]:
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
    doc = orjson.loads(chunk[6:])
    assert isinstance(doc, dict)
    return doc


# --------------------------------------------------------------------------- data URLs


@SETTINGS
@given(media=media_type, data=st.binary(max_size=40), extra=st.sampled_from(["", ";charset=x"]))
def test_parse_data_url_round_trips_base64_urls(media: str, data: bytes, extra: str) -> None:
    encoded = base64.b64encode(data).decode()
    url = f"data:{media}{extra};base64,{encoded}"
    assert formats.parse_data_url(url, "where") == (media, encoded)


@SETTINGS
@given(url=st.text(max_size=30).filter(lambda u: not u.startswith("data:")))
def test_parse_data_url_leaves_other_urls(url: str) -> None:
    assert formats.parse_data_url(url, "where") is None


@SETTINGS
@given(header=st.text(alphabet="abc/;=", max_size=12), data=st.text(max_size=12))
def test_parse_data_url_refuses_what_is_not_base64(header: str, data: str) -> None:
    url = f"data:{header},{data}"
    if "base64" in header.split(";")[1:]:
        return  # (the alphabet cannot spell it, but keep the property honest)
    with pytest.raises(BadRequest, match="can be sent to Gemini") as info:
        formats.parse_data_url(url, "messages[0].content[1].image_url.url", upstream="Gemini")
    assert info.value.param == "messages[0].content[1].image_url.url"


def test_parse_data_url_defaults_the_media_type() -> None:
    assert formats.parse_data_url("data:;base64,QQ==", "w") == ("application/octet-stream", "QQ==")
    with pytest.raises(BadRequest, match="can be sent to this provider"):
        formats.parse_data_url("data:image/png,raw", "w")


def test_file_part_data() -> None:
    pdf = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}
    assert formats.file_part_data(pdf, "m.content[0]") == ("application/pdf", "JVBERi0=")
    assert formats.file_part_data({"type": "file", "file": {"file_id": "file-1"}}, "w") is None
    assert formats.file_part_data({"type": "file"}, "w") is None
    assert (
        formats.file_part_data({"type": "file", "file": {"file_data": "https://x/y.pdf"}}, "w")
        is None
    )
    with pytest.raises(BadRequest, match="sent to Bedrock") as info:
        formats.file_part_data({"file": {"file_data": "data:a/b,raw"}}, "p", upstream="Bedrock")
    assert info.value.param == "p.file.file_data"


# --------------------------------------------------------------------------- text parts


text_part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=10)),
    st.builds(lambda t: {"type": "input_text", "text": t}, st.text(max_size=10)),
    st.builds(lambda t: {"type": "output_text", "text": t}, st.text(max_size=10)),
    st.builds(lambda t: {"type": "refusal", "refusal": t}, st.text(max_size=10)),
)


@SETTINGS
@given(parts=st.lists(text_part, max_size=5))
def test_text_of_parts_reads_every_text_part(parts: list[dict[str, Any]]) -> None:
    expected = [p.get("text", p.get("refusal")) for p in parts]
    assert formats.text_of_parts(parts, "w") == expected


@SETTINGS
@given(text=st.text(max_size=20))
def test_text_of_parts_takes_a_string_as_one_text(text: str) -> None:
    assert formats.text_of_parts(text, "w") == [text]


def test_text_of_parts_refuses_other_parts_and_shapes() -> None:
    assert formats.text_of_parts(None, "w") == []
    image = [{"type": "image_url", "image_url": {"url": "https://x"}}]
    with pytest.raises(BadRequest, match=r"w\[0\]: only text parts can be translated here"):
        formats.text_of_parts(image, "w")
    with pytest.raises(BadRequest, match="only text parts can be sent here to Bedrock"):
        formats.text_of_parts(image, "w", upstream="Bedrock")
    with pytest.raises(BadRequest, match=r"w\[0\].text must be a string"):
        formats.text_of_parts([{"type": "text", "text": 3}], "w")
    with pytest.raises(BadRequest, match="must be a string or an array"):
        formats.text_of_parts(7, "w")
    with pytest.raises(BadRequest, match=r"w\[0\] must be a JSON object"):
        formats.text_of_parts(["plain"], "w")


def test_require_object_and_part_text() -> None:
    assert formats.require_object({"a": 1}, "w") == {"a": 1}
    with pytest.raises(BadRequest, match="tools must be a JSON object") as info:
        formats.require_object([], "tools")
    assert info.value.param == "tools"
    assert formats.part_text({"text": ""}, "w") == ""
    with pytest.raises(BadRequest, match=r"w.text must be a string"):
        formats.part_text({"text": None}, "w")


# --------------------------------------------------------------------------- tool arguments


@SETTINGS
@given(value=json_object)
def test_tool_call_arguments_round_trip(value: dict[str, Any]) -> None:
    encoded = orjson.dumps(value).decode()
    assert formats.tool_call_arguments(encoded, "w") == value
    assert formats.tool_call_arguments(value, "w") is value
    assert formats.tool_call_arguments(encoded, "w", strict=True) == value


@SETTINGS
@given(value=json_value.filter(lambda v: not isinstance(v, dict)))
def test_tool_call_arguments_refuse_json_that_is_no_object(value: Any) -> None:
    with pytest.raises(BadRequest, match="must be a JSON object to be sent to Gemini") as info:
        formats.tool_call_arguments(
            orjson.dumps(value).decode(), "m.tool_calls[0]", upstream="Gemini"
        )
    assert info.value.param == "m.tool_calls[0]"


@pytest.mark.parametrize("missing", [None, "", "  \n"])
def test_tool_call_arguments_missing_are_empty(missing: Any) -> None:
    assert formats.tool_call_arguments(missing, "w") == {}
    assert formats.tool_call_arguments(missing, "w", strict=True) == {}


@pytest.mark.parametrize("other", [5, [1], True])
def test_tool_call_arguments_of_another_type(other: Any) -> None:
    assert formats.tool_call_arguments(other, "w") == {}  # lenient: no arguments
    with pytest.raises(BadRequest, match="must be a JSON object"):
        formats.tool_call_arguments(other, "w", strict=True)
    with pytest.raises(BadRequest, match="must be a JSON object"):
        formats.tool_call_arguments("{not json", "w")


# --------------------------------------------------------------------------- dropped params


def test_dropped_params_keep_first_seen_order() -> None:
    dropped = formats.DroppedParams()
    for name in ("b", "a", "b", "c", "a"):
        dropped.add(name)
    assert dropped.result() == ("b", "a", "c")
    assert list(dropped.names) == ["b", "a", "c"]


@SETTINGS
@given(body=st.dictionaries(st.sampled_from(["x", "y", "n", "store", "user"]), json_value))
def test_dropped_chat_params(body: dict[str, Any]) -> None:
    result = formats.dropped_chat_params(
        {"model": "m", "messages": [], **body}, formats.CHAT_COMMON_PARAMS
    )
    expected = tuple(
        k
        for k, v in body.items()
        if v is not None
        and not (k in formats.CHAT_NOOP_DEFAULTS and v == formats.CHAT_NOOP_DEFAULTS[k])
    )
    assert result.result() == expected


def test_dropped_chat_params_skip_the_handled_ones() -> None:
    body = {"model": "m", "top_k": 3, "n": 1, "n_other": 2, "logprobs": True, "seed": None}
    assert formats.dropped_chat_params(body, {"model", "top_k"}).result() == ("n_other", "logprobs")


# --------------------------------------------------------------------------- messages and tools


def test_chat_messages_checks_and_reports() -> None:
    dropped = formats.DroppedParams()
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "name": "ann"},
        {"role": "tool", "tool_call_id": "call_1", "content": "r"},
        {"role": "function", "name": "f", "content": "x"},
    ]
    got = [(where, role) for where, role, _ in formats.chat_messages(messages, dropped)]
    assert got == [
        ("messages[0]", "system"),
        ("messages[1]", "user"),
        ("messages[2]", "tool"),
        ("messages[3]", "function"),
    ]
    assert dropped.result() == ("messages.name",)
    with pytest.raises(BadRequest, match=r'messages\[1\].role "robot" is not a chat'):
        list(formats.chat_messages([{"role": "user"}, {"role": "robot"}], formats.DroppedParams()))
    with pytest.raises(BadRequest, match=r"messages\[0\].role \['user'\]"):
        list(formats.chat_messages([{"role": ["user"]}], formats.DroppedParams()))
    with pytest.raises(BadRequest, match=r"messages\[0\].tool_call_id is required"):
        list(formats.chat_messages([{"role": "tool", "tool_call_id": ""}], formats.DroppedParams()))
    with pytest.raises(BadRequest, match=r"messages\[0\] must be a JSON object"):
        list(formats.chat_messages(["hi"], formats.DroppedParams()))


def test_content_parts_and_image_part_url() -> None:
    dropped = formats.DroppedParams()
    content = [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "high"}},
        {"type": "image_url", "image_url": "https://x/b.png"},
    ]
    parts = list(formats.content_parts(content, "messages[0]"))
    assert [(w, k) for w, _, k in parts] == [
        ("messages[0].content[0]", "text"),
        ("messages[0].content[1]", "image_url"),
        ("messages[0].content[2]", "image_url"),
    ]
    assert [formats.image_part_url(p, w, dropped) for w, p, _ in parts[1:]] == [
        "https://x/a.png",
        "https://x/b.png",
    ]
    assert dropped.result() == ("image_url.detail",)
    with pytest.raises(BadRequest, match=r"content\[0\].image_url.url must be a string"):
        formats.image_part_url({"image_url": {}}, "m.content[0]", dropped)
    with pytest.raises(BadRequest, match=r"messages\[0\].content must be a string or an array"):
        list(formats.content_parts({"type": "text"}, "messages[0]"))


def test_tool_functions_and_assistant_tool_calls() -> None:
    dropped = formats.DroppedParams()
    tools = [
        {"type": "function", "function": {"name": "a"}},
        {"type": "custom", "custom": {"name": "b"}},
        {"function": {"name": "c", "strict": True}},
    ]
    assert [f["name"] for f in formats.tool_functions(tools, dropped)] == ["a", "c"]
    assert dropped.result() == ("tools.custom",)
    with pytest.raises(BadRequest, match=r"tools\[0\].function.name is required"):
        list(formats.tool_functions([{"type": "function", "function": {"name": ""}}], dropped))

    message = {
        "role": "assistant",
        "tool_calls": [{"id": "call_1", "function": {"name": "a", "arguments": "{}"}}],
    }
    calls = list(formats.assistant_tool_calls(message, "messages[1]"))
    function = {"name": "a", "arguments": "{}"}
    assert calls == [("messages[1].tool_calls[0]", message["tool_calls"][0], function)]
    assert list(formats.assistant_tool_calls({"role": "assistant"}, "m")) == []
    with pytest.raises(BadRequest, match=r"m.tool_calls must be an array"):
        list(formats.assistant_tool_calls({"tool_calls": {}}, "m"))
    with pytest.raises(BadRequest, match=r"m.tool_calls\[0\].function must be a JSON object"):
        list(formats.assistant_tool_calls({"tool_calls": [{"id": "x"}]}, "m"))


# --------------------------------------------------------------------------- ids and chunks


def test_new_ids_are_fresh_and_shaped() -> None:
    chat_ids = {formats.new_chat_completion_id() for _ in range(50)}
    call_ids = {formats.new_tool_call_id() for _ in range(50)}
    assert len(chat_ids) == len(call_ids) == 50
    assert all(i.startswith("chatcmpl-") and len(i) == 9 + 24 for i in chat_ids)
    assert all(i.startswith("call_") and len(i) == 5 + 24 for i in call_ids)


def test_chat_chunk_writers() -> None:
    assert _event(formats.chat_chunk("id-1", 7, "m", {"content": "hi"})) == {
        "id": "id-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"content": "hi"}, "logprobs": None, "finish_reason": None}
        ],
    }
    chunk = _event(formats.chat_chunk("id-1", 7, "m", {}, "stop", index=2))
    assert chunk["choices"] == [
        {"index": 2, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    usage = Usage(input_tokens=3, output_tokens=4, cache_read_input_tokens=1)
    assert _event(formats.chat_usage_chunk("id-1", 7, "m", usage)) == {
        "id": "id-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [],
        "usage": formats.usage_to_chat(usage),
    }


@given(st.lists(st.text(max_size=12), max_size=6))
def test_dropped_header_value_is_one_safe_header_line_that_round_trips(names: list[str]) -> None:
    """Any names: the value is printable ASCII (no line break), splits back into one part per
    name, each part decodes to its name (a name with a ``%`` of its own is kept as sent), and
    reporting the split value again changes nothing (a fallback attempt merges the header it
    finds)."""
    from urllib.parse import unquote

    from tollway.formats.shapes import dropped_header_value

    value = dropped_header_value(names)
    assert value.isascii() and (value.isprintable() or not value)
    if not names:
        assert value == ""
        return
    parts = value.split(",")
    assert len(parts) == len(names)
    for part, name in zip(parts, names, strict=True):
        if "%" not in name:
            assert unquote(part) == name
    assert dropped_header_value(parts) == value
