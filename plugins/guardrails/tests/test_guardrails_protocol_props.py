"""Property tests of the core's evaluator-protocol helpers (:mod:`tollway.guardrails`): text
slots in request/response bodies, SSE chunk rewriting, content shapes and merging."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tollway.guardrails import (
    ContentShapeError,
    chunk_content,
    content_texts,
    merge_text,
    merge_texts,
    parse_chunk,
    post_content,
    pre_content,
    request_texts,
    response_texts,
    set_texts,
    texts_from_content,
    with_texts,
)
from tollway.sse import SSESplitter

# orjson refuses lone surrogates, which no JSON body carries anyway.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
NONEMPTY = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
ROLE = st.sampled_from(["system", "developer", "user", "assistant", "tool"])
IMAGE_URL = st.just({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})


def _texts_strategy(n: int) -> st.SearchStrategy[list[str]]:
    return st.lists(TEXT, min_size=n, max_size=n)


# --- request bodies ----------------------------------------------------------------------------

chat_part = st.one_of(st.builds(lambda t: {"type": "text", "text": t}, TEXT), IMAGE_URL)
chat_message = st.builds(
    lambda role, content: {"role": role, "content": content},
    ROLE,
    st.one_of(TEXT, st.lists(chat_part, max_size=3), st.none()),
)
chat_body = st.builds(
    lambda messages: {"model": "gpt-4o", "messages": messages, "stream": False},
    st.lists(chat_message, max_size=5),
)

text_block = st.builds(lambda t: {"type": "text", "text": t}, TEXT)
tool_use = st.just({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "x"}})
tool_result = st.builds(
    lambda c: {"type": "tool_result", "tool_use_id": "toolu_1", "content": c},
    st.one_of(TEXT, st.lists(text_block, max_size=2)),
)
anthropic_message = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["user", "assistant"]),
    st.one_of(TEXT, st.lists(st.one_of(text_block, tool_use, tool_result), max_size=3)),
)
messages_body = st.builds(
    lambda system, messages: {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        **({"system": system} if system is not None else {}),
        "messages": messages,
    },
    st.one_of(st.none(), TEXT, st.lists(text_block, max_size=2)),
    st.lists(anthropic_message, max_size=4),
)

responses_part = st.one_of(
    st.builds(
        lambda k, t: {"type": k, "text": t}, st.sampled_from(["input_text", "output_text"]), TEXT
    ),
    st.just({"type": "input_image", "image_url": "data:image/png;base64,AAAA"}),
)
responses_item = st.one_of(
    st.builds(
        lambda role, content: {"type": "message", "role": role, "content": content},
        ROLE,
        st.one_of(TEXT, st.lists(responses_part, max_size=3)),
    ),
    st.builds(lambda role, content: {"role": role, "content": content}, ROLE, TEXT),
    st.just({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}),
    st.builds(lambda o: {"type": "function_call_output", "call_id": "c1", "output": o}, TEXT),
)
responses_body = st.builds(
    lambda instructions, items: {
        "model": "gpt-5",
        **({"instructions": instructions} if instructions is not None else {}),
        "input": items,
    },
    st.one_of(st.none(), TEXT),
    st.one_of(TEXT, st.lists(responses_item, max_size=4)),
)
embeddings_body = st.builds(
    lambda i: {"model": "text-embedding-3-small", "input": i},
    st.one_of(TEXT, st.lists(TEXT, max_size=3)),
)

REQUESTS = [
    ("chat", chat_body),
    ("messages", messages_body),
    ("responses", responses_body),
    ("embeddings", embeddings_body),
]


@pytest.mark.parametrize(("endpoint", "strategy"), REQUESTS, ids=[e for e, _ in REQUESTS])
def test_request_texts_round_trip(endpoint: str, strategy: st.SearchStrategy[Any]) -> None:
    @given(body=strategy, data=st.data())
    def check(body: dict[str, Any], data: st.DataObject) -> None:
        before = copy.deepcopy(body)
        slots = request_texts(endpoint, body)
        # Unchanged texts: the body itself comes back.
        assert set_texts(body, slots, [s.text for s in slots]) is body
        new = data.draw(_texts_strategy(len(slots)))
        rewritten = set_texts(body, slots, new)
        assert body == before, "set_texts must not modify its input"
        again = request_texts(endpoint, rewritten)
        assert [s.text for s in again] == new
        assert [(s.path, s.role) for s in again] == [(s.path, s.role) for s in slots]
        # Only text changed: the rest of the document is the same.
        assert set_texts(rewritten, again, [s.text for s in slots]) == body
        # The pre content lists exactly these texts, with their roles.
        content = pre_content(slots, body.get("model"))
        assert content_texts("pre", content) == [s.text for s in slots]
        assert [m["role"] for m in content["messages"]] == [s.role for s in slots]
        orjson.dumps(content)  # what the webhook receives is JSON

    check()


def test_request_roles_and_kinds() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image"}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}],
            },
        ],
    }
    got = [(s.role, s.text) for s in request_texts("messages", body)]
    assert got == [("system", "sys"), ("user", "hi"), ("tool", "42")]
    assert request_texts("unknown-endpoint", body) == []


# --- response bodies ---------------------------------------------------------------------------

chat_response = st.builds(
    lambda contents: {
        "object": "chat.completion",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
            for i, c in enumerate(contents)
        ],
    },
    st.lists(st.one_of(TEXT, st.none()), min_size=1, max_size=3),
)
messages_response = st.builds(
    lambda blocks: {"type": "message", "role": "assistant", "content": blocks},
    st.lists(st.one_of(text_block, tool_use), max_size=3),
)
responses_response = st.builds(
    lambda items: {"object": "response", "output": items},
    st.lists(
        st.one_of(
            st.builds(
                lambda parts: {"type": "message", "role": "assistant", "content": parts},
                st.lists(
                    st.builds(
                        lambda t: {"type": "output_text", "text": t, "annotations": []}, TEXT
                    ),
                    max_size=2,
                ),
            ),
            st.just({"type": "reasoning", "summary": []}),
            st.just({"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"}),
        ),
        max_size=3,
    ),
)
RESPONSES = [
    ("chat", chat_response),
    ("messages", messages_response),
    ("responses", responses_response),
]


@pytest.mark.parametrize(("endpoint", "strategy"), RESPONSES, ids=[e for e, _ in RESPONSES])
def test_response_texts_round_trip(endpoint: str, strategy: st.SearchStrategy[Any]) -> None:
    @given(body=strategy, data=st.data())
    def check(body: dict[str, Any], data: st.DataObject) -> None:
        before = copy.deepcopy(body)
        slots = response_texts(endpoint, body)
        assert all(s.role == "assistant" for s in slots)
        new = data.draw(_texts_strategy(len(slots)))
        rewritten = set_texts(body, slots, new)
        assert body == before
        assert [s.text for s in response_texts(endpoint, rewritten)] == new
        content = post_content([s.text for s in slots])
        assert content_texts("post", content) == [s.text for s in slots]

    check()


# --- SSE chunks --------------------------------------------------------------------------------


def _chat_events(texts: list[str | None]) -> list[tuple[bytes, str | None]]:
    out: list[tuple[bytes, str | None]] = []
    for t in texts:
        if t is None:
            doc = {"object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 3}}
            out.append((b"data: " + orjson.dumps(doc) + b"\n\n", None))
        else:
            doc = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": t}}],
            }
            out.append((b"data: " + orjson.dumps(doc) + b"\n\n", t or None))
    out.append((b"data: [DONE]\n\n", None))
    return out


def _named(name: str, doc: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


def _messages_events(texts: list[str | None]) -> list[tuple[bytes, str | None]]:
    out: list[tuple[bytes, str | None]] = [
        (
            _named(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            None,
        ),
        (_named("ping", {"type": "ping"}), None),
    ]
    for t in texts:
        if t is None:
            delta = {"type": "input_json_delta", "partial_json": '{"text": "x"}'}
            doc = {"type": "content_block_delta", "index": 1, "delta": delta}
            out.append((_named("content_block_delta", doc), None))
        else:
            doc = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": t},
            }
            out.append((_named("content_block_delta", doc), t or None))
    out.append((_named("message_stop", {"type": "message_stop"}), None))
    return out


def _responses_events(texts: list[str | None]) -> list[tuple[bytes, str | None]]:
    out: list[tuple[bytes, str | None]] = []
    for t in texts:
        if t is None:
            doc = {"type": "response.in_progress", "response": {"output": []}}
            out.append((_named("response.in_progress", doc), None))
        else:
            doc = {
                "type": "response.output_text.delta",
                "output_index": 0,
                "content_index": 0,
                "delta": t,
                "sequence_number": 4,
            }
            out.append((_named("response.output_text.delta", doc), t or None))
    full = "".join(t or "" for t in texts)
    done = {"type": "response.output_text.done", "text": full, "output_index": 0}
    out.append((_named("response.output_text.done", done), full or None))
    return out


CHUNKS = [("chat", _chat_events), ("messages", _messages_events), ("responses", _responses_events)]


def _blocks(data: bytes) -> list[bytes]:
    splitter = SSESplitter()
    return splitter.feed(data)


@pytest.mark.parametrize(("endpoint", "events"), CHUNKS, ids=[e for e, _ in CHUNKS])
def test_chunk_rewrite_round_trip(endpoint: str, events: Any) -> None:
    @given(deltas=st.lists(st.one_of(TEXT, st.none()), max_size=5), data=st.data())
    def check(deltas: list[str | None], data: st.DataObject) -> None:
        evs = events(deltas)
        chunk = b"".join(e for e, _ in evs)
        expected = [t for _, t in evs if t]
        parsed = parse_chunk(endpoint, bytearray(chunk))
        if not expected:
            assert parsed is None
            return
        assert parsed is not None
        assert parsed.texts == expected
        assert parsed.rewrite(expected) == chunk  # untouched: byte for byte
        new = data.draw(st.lists(NONEMPTY, min_size=len(expected), max_size=len(expected)))
        out = parsed.rewrite(new)
        again = parse_chunk(endpoint, out)
        assert again is not None and again.texts == new
        # Events without text are relayed byte for byte, in place.
        before, after = _blocks(chunk), _blocks(out)
        assert len(before) == len(after)
        for (block, text), new_block in zip(evs, after, strict=True):
            if not text:
                assert new_block == block
        content = chunk_content(expected)
        assert content["delta"] == "".join(expected)

    check()


def test_chunk_without_text_costs_one_substring_test() -> None:
    assert parse_chunk("chat", b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n') is None
    assert parse_chunk("messages", b'event: ping\ndata: {"type":"ping"}\n\n') is None
    assert parse_chunk("embeddings", b"data: {}\n\n") is None


def test_chunk_crlf_and_multiple_events() -> None:
    chunk = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a@b.co"}}]}\r\n\r\n'
        b'data: {"choices":[{"index":1,"delta":{"content":"x"}}]}\r\n\r\n'
    )
    parsed = parse_chunk("chat", chunk)
    assert parsed is not None and parsed.texts == ["a@b.co", "x"]
    out = parsed.rewrite(["[E]", "x"])
    assert out.endswith(b'data: {"choices":[{"index":1,"delta":{"content":"x"}}]}\r\n\r\n')
    assert b'"content":"[E]"' in out


def test_responses_snapshot_events_carry_text_too() -> None:
    item = {"type": "message", "content": [{"type": "output_text", "text": "mail me"}]}
    chunk = _named("response.output_item.done", {"type": "response.output_item.done", "item": item})
    chunk += _named(
        "response.completed",
        {"type": "response.completed", "response": {"output": [item, {"type": "reasoning"}]}},
    )
    parsed = parse_chunk("responses", chunk)
    assert parsed is not None and parsed.texts == ["mail me", "mail me"]
    again = parse_chunk("responses", parsed.rewrite(["A", "B"]))
    assert again is not None and again.texts == ["A", "B"]


# --- content shapes ----------------------------------------------------------------------------


@given(texts=st.lists(TEXT, max_size=5), data=st.data())
def test_pre_content_round_trip(texts: list[str], data: st.DataObject) -> None:
    content = {"messages": [{"role": "user", "content": t} for t in texts], "model": "m"}
    new = data.draw(_texts_strategy(len(texts)))
    modified = with_texts("pre", content, new)
    assert content_texts("pre", modified) == new
    assert texts_from_content("pre", modified, texts) == new
    assert modified["model"] == "m"


@pytest.mark.parametrize("direction", ["post", "stream_chunk"])
def test_joined_content_round_trip(direction: Any) -> None:
    @given(texts=st.lists(TEXT, min_size=1, max_size=4), data=st.data())
    def check(texts: list[str], data: st.DataObject) -> None:
        content = post_content(texts) if direction == "post" else chunk_content(texts)
        new = data.draw(_texts_strategy(len(texts)))
        modified = with_texts(direction, content, new)
        assert texts_from_content(direction, modified, texts) == new
        # An answer that only rewrites the joined string: first text gets it, others empty.
        one = "output" if direction == "post" else "delta"
        joined = {one: "REWRITTEN"}
        got = texts_from_content(direction, joined, texts)
        assert got == ["REWRITTEN"] + [""] * (len(texts) - 1)
        # The joined string unchanged: nothing changes.
        assert texts_from_content(direction, {one: content[one]}, texts) == texts

    check()


@pytest.mark.parametrize(
    ("direction", "modified", "needle"),
    [
        ("pre", [], "must be an object"),
        ("pre", {"messages": "x"}, "must be an array"),
        ("pre", {"messages": []}, "must have the 1 that were sent"),
        ("pre", {"messages": [{"content": 3}]}, "messages[0].content must be a string"),
        ("post", {}, "needs 'output'"),
        ("post", {"outputs": ["a", "b"]}, "array of 1 strings"),
        ("stream_chunk", {"delta": 5}, "delta must be a string"),
    ],
)
def test_bad_modified_content_is_named(direction: Any, modified: Any, needle: str) -> None:
    with pytest.raises(ContentShapeError) as info:
        texts_from_content(direction, modified, ["x"])
    assert needle in str(info.value)


# --- merging -----------------------------------------------------------------------------------

WORD = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=8)


@given(original=TEXT, k=st.integers(0, 3))
def test_merge_identity(original: str, k: int) -> None:
    assert merge_text(original, [original] * k) == original


@given(original=TEXT, version=TEXT)
def test_merge_single_version_wins(original: str, version: str) -> None:
    assert merge_text(original, [original, version, original]) == version


@given(
    words=st.lists(WORD, min_size=2, max_size=8, unique=True),
    data=st.data(),
)
def test_merge_disjoint_word_edits_all_apply(words: list[str], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(words) - 1))
    j = data.draw(st.integers(0, len(words) - 1))
    assume(i != j)
    a_word, b_word = "[A]", "[B]"
    v1 = " ".join(a_word if n == i else w for n, w in enumerate(words))
    v2 = " ".join(b_word if n == j else w for n, w in enumerate(words))
    expected = " ".join(a_word if n == i else b_word if n == j else w for n, w in enumerate(words))
    assert merge_text(" ".join(words), [v1, v2]) == expected


def test_merge_overlapping_edits_later_wins() -> None:
    assert merge_text("call alice now", ["call [X] now", "call [Y] now"]) == "call [Y] now"
    assert merge_texts(["a", "b"], [["A", "b"], ["a", "B"]]) == ["A", "B"]
    with pytest.raises(ValueError):
        merge_texts(["a"], [["a", "b"]])
