"""Request ids and W3C trace context ids (SPEC §2 response headers, §7 tracing).

``request_id()`` is ``grq_`` + a ULID (48-bit millisecond time, 80 random bits from
``os.urandom``, Crockford base32). It is built here rather than with python-ulid because this
runs once per request: a 10-bit lookup table and a per-millisecond cache of the time part make
it ~5x faster (about 1 µs), and the result is the same canonical ULID string.
"""

from __future__ import annotations

import os
import time

__all__ = [
    "format_traceparent",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "request_id",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as two Crockford digits.
_PAIRS = [_CROCKFORD[i >> 5] + _CROCKFORD[i & 31] for i in range(1024)]
_M = 1023

# (millisecond, "grq_" + its 10 time digits); replaced whole, so threads never see a torn pair.
_time_part: tuple[int, str] = (-1, "")

_HEX = "0123456789abcdef"
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def request_id() -> str:
    """A new request id: ``grq_`` + a 26-char ULID (not monotonic within a millisecond)."""
    global _time_part
    ms = time.time_ns() // 1_000_000
    cached = _time_part
    if cached[0] != ms:
        p = _PAIRS
        # 48 bits of time -> 10 digits (the top digit carries the 2 leading zero bits).
        cached = (
            ms,
            "grq_"
            + p[ms >> 40]
            + p[(ms >> 30) & _M]
            + p[(ms >> 20) & _M]
            + p[(ms >> 10) & _M]
            + p[ms & _M],
        )
        _time_part = cached
    r = int.from_bytes(os.urandom(10))
    p = _PAIRS
    return "".join(
        (
            cached[1],
            p[r >> 70],
            p[(r >> 60) & _M],
            p[(r >> 50) & _M],
            p[(r >> 40) & _M],
            p[(r >> 30) & _M],
            p[(r >> 20) & _M],
            p[(r >> 10) & _M],
            p[r & _M],
        )
    )


def new_trace_id() -> str:
    """A new W3C trace id: 32 lower-case hex digits, never all zero."""
    while True:
        tid = os.urandom(16).hex()
        if tid != _ZERO_TRACE:
            return tid


def new_span_id() -> str:
    """A new W3C span (parent) id: 16 lower-case hex digits, never all zero."""
    while True:
        sid = os.urandom(8).hex()
        if sid != _ZERO_SPAN:
            return sid


def parse_traceparent(value: str | None) -> tuple[str, str, int] | None:
    """``(trace_id, parent_span_id, flags)`` from a W3C ``traceparent`` header, or None.

    None for anything invalid: wrong lengths or separators, non-hex or upper-case digits,
    all-zero ids, version ``ff``. A version above ``00`` is parsed as 00 when the header is at
    least as long and any extra part is ``-``-separated, as the spec asks.
    """
    if not value:
        return None
    value = value.strip(" \t")
    n = len(value)
    if n < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version = value[:2]
    if version == "00":
        if n != 55:
            return None
    elif version == "ff" or (n > 55 and value[55] != "-"):
        return None
    # Lower-case hex only: strip removes every hex digit, so anything left is invalid.
    if (value[:2] + value[3:35] + value[36:52] + value[53:55]).strip(_HEX):
        return None
    trace_id = value[3:35]
    span_id = value[36:52]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, int(value[53:55], 16)


def format_traceparent(trace_id: str, span_id: str, flags: int = 1) -> str:
    """The version-00 ``traceparent`` value for the given ids and flags (default: sampled)."""
    return f"00-{trace_id}-{span_id}-{flags & 0xFF:02x}"
