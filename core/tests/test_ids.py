"""Tests of tollway._ids: request ids and W3C trace context."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from tollway._ids import (
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    request_id,
)

HEX = "0123456789abcdef"


def test_request_id_is_a_canonical_ulid_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [request_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for rid in ids:
        assert rid.startswith("grq_") and len(rid) == 30
        parsed = ULID.from_str(rid[4:])
        assert str(parsed) == rid[4:]  # canonical Crockford encoding
        assert before <= parsed.milliseconds <= after


def test_request_id_random_part_varies_within_a_millisecond() -> None:
    ids = {request_id()[14:] for _ in range(500)}
    assert len(ids) == 500


def test_new_trace_and_span_ids() -> None:
    traces = {new_trace_id() for _ in range(200)}
    spans = {new_span_id() for _ in range(200)}
    assert len(traces) == 200 and len(spans) == 200
    for t in traces:
        assert len(t) == 32 and not t.strip(HEX) and t != "0" * 32
    for s in spans:
        assert len(s) == 16 and not s.strip(HEX) and s != "0" * 16


def test_parse_traceparent_examples() -> None:
    tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert parse_traceparent(f"00-{tid}-{sid}-01") == (tid, sid, 1)
    assert parse_traceparent(f"00-{tid}-{sid}-00") == (tid, sid, 0)
    assert parse_traceparent(f" 00-{tid}-{sid}-01 ") == (tid, sid, 1)
    # future versions: longer allowed when the extra part is dash-separated
    assert parse_traceparent(f"01-{tid}-{sid}-01-extra") == (tid, sid, 1)
    assert parse_traceparent(f"01-{tid}-{sid}-01") == (tid, sid, 1)
    bad = [
        None,
        "",
        "garbage",
        f"00-{tid}-{sid}-01-extra",  # version 00 must be exactly 55 chars
        f"01-{tid}-{sid}-01x",
        f"ff-{tid}-{sid}-01",
        f"00-{tid.upper()}-{sid}-01",
        f"00-{tid}-{sid.upper()}-01",
        f"0A-{tid}-{sid}-01",
        f"00-{tid}-{sid}-0G",
        f"00-{'0' * 32}-{sid}-01",
        f"00-{tid}-{'0' * 16}-01",
        f"00-{tid[:-1]}-{sid}0-01",
        f"00_{tid}-{sid}-01",
        f"00-{tid}-{sid}_01",
        f"00-{tid[:31]}g-{sid}-01",
        f"00-{tid}-{sid}-+1",
        f"00-{tid}-{sid}- 1",
        f"00-{tid[:-2]}__-{sid}-01",
    ]
    for value in bad:
        assert parse_traceparent(value) is None, value


def test_format_traceparent() -> None:
    tid, sid = new_trace_id(), new_span_id()
    assert format_traceparent(tid, sid) == f"00-{tid}-{sid}-01"
    assert format_traceparent(tid, sid, 0) == f"00-{tid}-{sid}-00"


@given(
    st.text(HEX, min_size=32, max_size=32).filter(lambda s: s != "0" * 32),
    st.text(HEX, min_size=16, max_size=16).filter(lambda s: s != "0" * 16),
    st.integers(0, 255),
)
def test_valid_traceparent_round_trips(trace_id: str, span_id: str, flags: int) -> None:
    header = format_traceparent(trace_id, span_id, flags)
    assert parse_traceparent(header) == (trace_id, span_id, flags)


@given(st.text(max_size=80))
def test_garbage_never_raises(value: str) -> None:
    result = parse_traceparent(value)
    if result is not None:
        trace_id, span_id, flags = result
        assert len(trace_id) == 32 and len(span_id) == 16 and 0 <= flags <= 255


@given(st.text("0123456789abcdefABCDEF-gx \t", min_size=50, max_size=60))
def test_near_miss_never_raises(value: str) -> None:
    result = parse_traceparent(value)
    if result is not None:
        stripped = value.strip(" \t")
        assert result == (stripped[3:35], stripped[36:52], int(stripped[53:55], 16))
        assert stripped[:2] != "ff" and (stripped[:2] != "00" or len(stripped) == 55)
