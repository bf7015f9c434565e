"""Tests of tollway._sse: SSE framing, parsing and gateway-authored frames."""

from __future__ import annotations

import time
from itertools import pairwise

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway._sse import SSESplitter, error_event, event_fields, format_event

ENDINGS = ("\n", "\r\n", "\r")


def split_all(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = SSESplitter()
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out, splitter.tail()


# --- strategies ------------------------------------------------------------------------------

line_text = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), min_size=1
).map(lambda s: s.encode())
field_line = st.one_of(
    line_text.map(lambda v: b"data: " + v),
    line_text.map(lambda v: b"data:" + v),
    line_text.map(lambda v: b"event: " + v),
    line_text.map(lambda v: b":" + v),
    st.just(b"data"),
    st.just(b"id: 42"),
    st.just(b"retry: 1000"),
    line_text,
)


@st.composite
def event_stream(draw: st.DrawFn) -> list[bytes]:
    """Event blocks, each a run of non-empty lines then a blank line, any line endings.

    Generation avoids the one ambiguity of the format: a CR ending followed by an LF is a
    single CRLF ending, so it never puts an LF right after a bare CR.
    """
    events: list[bytes] = []
    prev_cr = False  # the previous byte emitted was a bare CR
    for _ in range(draw(st.integers(0, 8))):
        block = b""
        for line in draw(st.lists(field_line, max_size=4)):
            block += line + draw(st.sampled_from(ENDINGS)).encode()
        ends_cr = block.endswith(b"\r") or (not block and prev_cr)
        blank = draw(st.sampled_from(("\r\n", "\r") if ends_cr else ENDINGS)).encode()
        block += blank
        events.append(block)
        prev_cr = block.endswith(b"\r")
    return events


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


# --- splitter --------------------------------------------------------------------------------


@given(st.data())
def test_splitter_yields_exactly_the_events_for_any_chunking(data: st.DataObject) -> None:
    events = data.draw(event_stream())
    partial = data.draw(st.sampled_from([b"", b"data: part", b"data: x\n", b"event: y\r\n"]))
    if events and events[-1].endswith(b"\r") and partial.startswith(b"\n"):
        partial = b""
    stream = b"".join(events) + partial
    chunks = data.draw(chunked(stream))
    out, tail = split_all(chunks)
    assert b"".join(out) + tail == stream
    if events and events[-1].endswith(b"\r") and not partial:
        # A block ended by a bare CR at the very end waits for the next byte.
        assert out == events[:-1]
        assert tail == events[-1]
    else:
        assert out == events
        assert tail == partial


@given(st.data())
def test_splitter_output_independent_of_chunking_on_arbitrary_bytes(data: st.DataObject) -> None:
    stream = data.draw(st.binary(max_size=200) | st.text("ab:\r\n ", max_size=80).map(str.encode))
    whole, whole_tail = split_all([stream])
    pieces, pieces_tail = split_all(data.draw(chunked(stream)))
    bytewise, bytewise_tail = split_all([stream[i : i + 1] for i in range(len(stream))])
    assert whole == pieces == bytewise
    assert whole_tail == pieces_tail == bytewise_tail
    assert b"".join(whole) + whole_tail == stream


@pytest.mark.parametrize(
    ("stream", "blocks", "tail"),
    [
        (b"data: a\n\ndata: b\n\n", [b"data: a\n\n", b"data: b\n\n"], b""),
        (b"data: a\r\n\r\ndata: b\r\n\r\n", [b"data: a\r\n\r\n", b"data: b\r\n\r\n"], b""),
        (b"data: a\r\rdata: b\r\rx", [b"data: a\r\r", b"data: b\r\r"], b"x"),
        (
            b"data: a\n\r\ndata: b\r\n\ndata: c\r\r\nz",
            [b"data: a\n\r\n", b"data: b\r\n\n", b"data: c\r\r\n"],
            b"z",
        ),
        (b"data: a\r\ndata: b\r\n", [], b"data: a\r\ndata: b\r\n"),  # CRLF is one ending
        (b"event: x\ndata: 1\ndata: 2\n\n", [b"event: x\ndata: 1\ndata: 2\n\n"], b""),
    ],
)
def test_splitter_known_streams(stream: bytes, blocks: list[bytes], tail: bytes) -> None:
    assert split_all([stream]) == (blocks, tail)
    assert split_all([stream[i : i + 1] for i in range(len(stream))]) == (blocks, tail)


def test_terminator_split_across_chunks() -> None:
    s = SSESplitter()
    assert s.feed(b"data: a\r\n") == []
    assert s.feed(b"\r") == []  # CR at the end: an LF may still belong to this block
    assert s.feed(b"\ndata: b\n") == [b"data: a\r\n\r\n"]
    assert s.feed(b"\n") == [b"data: b\n\n"]
    assert s.tail() == b""
    assert s.buffered == 0


def test_bare_cr_block_released_by_next_byte() -> None:
    s = SSESplitter()
    assert s.feed(b"data: a\r\r") == []
    assert s.feed(b"d") == [b"data: a\r\r"]
    assert s.tail() == b"d"


def test_chunk_that_is_one_event_is_returned_as_is() -> None:
    chunk = b'data: {"x":1}\n\n'
    assert SSESplitter().feed(chunk)[0] is chunk


def test_several_events_in_one_chunk_and_a_partial() -> None:
    s = SSESplitter()
    assert s.feed(b"data: 1\n\ndata: 2\n\ndata: 3") == [b"data: 1\n\n", b"data: 2\n\n"]
    assert s.tail() == b"data: 3"
    assert s.buffered == 7
    assert s.feed(b"\n\n") == [b"data: 3\n\n"]


def test_leading_blank_lines_are_their_own_blocks() -> None:
    out, tail = split_all([b"\n\ndata: x\n\n"])
    assert out == [b"\n", b"\n", b"data: x\n\n"] and tail == b""
    assert [event_fields(b) for b in out] == [(None, b""), (None, b""), (None, b"x")]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_large_event_in_small_chunks_is_linear(ending: bytes) -> None:
    # One 8 MiB event fed 1 KiB at a time: rescanning the buffer on every feed would be
    # quadratic (gigabytes of scanning); the splitter resumes where it stopped.
    payload = b"data: " + b"x" * (8 << 20) + ending + ending + b"data: next" + ending
    s = SSESplitter()
    out: list[bytes] = []
    started = time.perf_counter()
    for i in range(0, len(payload), 1024):
        out.extend(s.feed(payload[i : i + 1024]))
    elapsed = time.perf_counter() - started
    assert len(out) == 1 and len(out[0]) == 6 + (8 << 20) + 2 * len(ending)
    assert elapsed < 1.5, elapsed


def test_many_small_events_in_one_chunk() -> None:
    events = [b"data: %d\n\n" % i for i in range(50_000)]
    out, tail = split_all([b"".join(events)])
    assert out == events and tail == b""


# --- event_fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"data: hello\n\n", (None, b"hello")),
        (b"data:hello\n\n", (None, b"hello")),
        (b"data:  two spaces\n\n", (None, b" two spaces")),
        (b"data: a\ndata: b\n\n", (None, b"a\nb")),
        (b"data\n\n", (None, b"")),
        (b"data:\ndata\n\n", (None, b"\n")),
        (b"event: message_start\ndata: {}\n\n", ("message_start", b"{}")),
        (b"event:ping\n\n", ("ping", b"")),
        (b"event:\ndata: x\n\n", (None, b"x")),
        (b": keep-alive\n\n", (None, b"")),
        (b":comment\ndata: x\n:another\n\n", (None, b"x")),
        (b"id: 7\nretry: 10\ndata: x\nfoo: bar\n\n", (None, b"x")),
        (b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\n", ("a", b"1\n2")),
        (b"event: a\rdata: 1\r\r", ("a", b"1")),
        (b"\xef\xbb\xbfdata: bom\n\n", (None, b"bom")),
        (b"event: first\nevent: second\ndata: x\n\n", ("second", b"x")),
        (b"data: a:b: c\n\n", (None, b"a:b: c")),
        (b"Data: case\n\n", (None, b"")),
        (b"data: x\r\n\n", (None, b"x")),
        (b"event: \xff\ndata: x\n\n", ("\ufffd", b"x")),
        (b"event: a\ndata: x\n\n", ("a", b"x")),
        (b"event:  sp\ndata: x\n\n", (" sp", b"x")),
        (b"event: \ndata: x\n\n", (None, b"x")),
        (b"event: a\ndata: \n\n", ("a", b"")),
        (b"event: a\ndata: x\ndata: y\n\n", ("a", b"x\ny")),
        (b"event: a\ndata:x\n\n", ("a", b"x")),
        (b"event: a\r\ndata: x\n\n", ("a", b"x")),
        (b"event: a\n\n", ("a", b"")),
    ],
)
def test_event_fields(block: bytes, expected: tuple[str | None, bytes]) -> None:
    assert event_fields(block) == expected


def reference_fields(block: bytes) -> tuple[str | None, bytes]:
    """The WHATWG algorithm, transcribed literally (slow, per character)."""
    if block.startswith(b"\xef\xbb\xbf"):
        block = block[3:]
    lines: list[bytes] = []
    line = b""
    i = 0
    while i < len(block):
        c = block[i : i + 1]
        if c == b"\r":
            lines.append(line)
            line = b""
            if block[i + 1 : i + 2] == b"\n":
                i += 1
        elif c == b"\n":
            lines.append(line)
            line = b""
        else:
            line += c
        i += 1
    if line:
        lines.append(line)
    event = b""
    data = b""
    for ln in lines:
        if not ln or ln.startswith(b":"):
            continue
        if b":" in ln:
            field, _, value = ln.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
        else:
            field, value = ln, b""
        if field == b"event":
            event = value
        elif field == b"data":
            data += value + b"\n"
    if data.endswith(b"\n"):
        data = data[:-1]
    return (event.decode("utf-8", "replace") or None), data


@given(st.data())
def test_event_fields_matches_the_reference_algorithm(data: st.DataObject) -> None:
    block = data.draw(
        event_stream().map(b"".join)
        | st.binary(max_size=60)
        | st.lists(field_line, max_size=3).map(lambda ls: b"\n".join(ls) + b"\n\n")
    )
    assert event_fields(block) == reference_fields(block)


# --- format_event / error_event --------------------------------------------------------------


def test_format_event() -> None:
    assert format_event(b"hi") == b"data: hi\n\n"
    assert format_event(b"a\nb", "update") == b"event: update\ndata: a\ndata: b\n\n"
    assert format_event(b"") == b"data: \n\n"
    assert format_event(b"a\r\nb\rc") == b"data: a\ndata: b\ndata: c\n\n"
    with pytest.raises(ValueError):
        format_event(b"x", "bad\nname")


event_names = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), min_size=1
)
event_data = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b""))


@given(event_data, st.none() | event_names)
def test_format_then_parse_round_trips(data: bytes, event: str | None) -> None:
    block = format_event(data, event)
    assert event_fields(block) == (event, data)
    out, tail = split_all([block])
    assert out == [block] and tail == b""


@given(st.lists(st.tuples(event_data, st.none() | event_names), max_size=10), st.data())
def test_formatted_events_split_back(
    items: list[tuple[bytes, str | None]], data: st.DataObject
) -> None:
    blocks = [format_event(d, e) for d, e in items]
    out, tail = split_all(data.draw(chunked(b"".join(blocks))))
    assert out == blocks and tail == b""
    assert [event_fields(b) for b in out] == [(e, d) for d, e in items]


def test_error_event_shape() -> None:
    frame = error_event("upstream reset the connection")
    assert frame.startswith(b"event: error\ndata: ") and frame.endswith(b"\n\n")
    name, data = event_fields(frame)
    assert name == "error"
    assert orjson.loads(data) == {
        "type": "error",
        "error": {
            "type": "provider_error",
            "code": "upstream_mid_stream_failure",
            "message": "upstream reset the connection",
        },
    }
    # Exact key order of SPEC §2.
    assert data.startswith(b'{"type":"error","error":{"type":"provider_error","code":')


def test_error_event_custom_and_multiline_message() -> None:
    frame = error_event('line1\nline2 "quoted"', code="stream_chunk_blocked", type_="guardrail")
    assert frame.count(b"\n") == 3  # the JSON stays on one data line
    out, _ = split_all([frame])
    assert out == [frame]
    payload = orjson.loads(event_fields(frame)[1])
    assert payload["error"] == {
        "type": "guardrail",
        "code": "stream_chunk_blocked",
        "message": 'line1\nline2 "quoted"',
    }
