"""Tests of tollway._input: edge input hygiene (model, headers, duplicate keys, echoing)."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway._input import (
    MAX_MODEL_CHARS,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADERS,
    duplicate_key,
    header_problem,
    header_value,
    model_problem,
    quote_input,
)
from tollway._logging import PrettyFormatter

# --- duplicate keys --------------------------------------------------------------------------

# Keys and strings that exercise the detector's shortcuts: colons, escapes, the letters of
# "\u003a", quotes and backslashes, non-ASCII.
_TEXT = st.text(alphabet=st.sampled_from(list('ab:"\\u003aAé\n\x00 \u2028😀')), max_size=8)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_SCALARS = st.none() | st.booleans() | st.integers() | _FLOATS | _TEXT


def _json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    return st.recursive(
        _SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
        max_leaves=max_leaves,
    )


_SMALL = _json_values(4)


def _escape_all(text: str) -> str:
    """``text`` as a JSON string with every character written as ``\\uXXXX``."""
    return '"' + "".join(f"\\u{u:04x}" for u in _utf16(text)) + '"'


def _utf16(text: str) -> list[int]:
    data = text.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _dump(value: Any, style: int, escape_keys: bool = False) -> str:
    """JSON text of ``value`` in one of several client styles (compact, spaced, ASCII-only,
    pretty), optionally with every key written fully escaped."""
    if isinstance(value, dict):
        sep, colon = ((",", ":"), (", ", ": "), (",", ":"), (",\n  ", " : "))[style]
        parts = [
            (_escape_all(k) if escape_keys else json.dumps(k, ensure_ascii=style == 2))
            + colon
            + _dump(v, style, escape_keys)
            for k, v in value.items()
        ]
        return "{" + sep.join(parts) + "}"
    if isinstance(value, list):
        sep = (",", ", ", ",", ",\n  ")[style]
        return "[" + sep.join(_dump(v, style, escape_keys) for v in value) + "]"
    return json.dumps(value, ensure_ascii=style == 2)


def _check(raw: bytes) -> str | None:
    return duplicate_key(raw, orjson.loads(raw))


@given(_json_values(), st.integers(0, 3), st.booleans())
@settings(max_examples=300)
def test_no_false_positive(value: Any, style: int, escape_keys: bool) -> None:
    raw = _dump(value, style, escape_keys).encode()
    assert _check(raw) is None


@st.composite
def _with_duplicate(draw: st.DrawFn) -> tuple[bytes, str]:
    """A JSON document with exactly one object naming one key twice, at any depth."""
    value = draw(_SMALL)
    key = draw(_TEXT)
    first, second = draw(_SMALL), draw(_SMALL)
    others = draw(st.dictionaries(_TEXT, _SMALL, max_size=3))
    others.pop(key, None)
    style = draw(st.integers(0, 3))
    escape_one = draw(st.booleans())  # write one of the two copies fully escaped
    sep, colon = ((",", ":"), (", ", ": "), (",", ":"), (",\n  ", " : "))[style]
    items = [
        json.dumps(k, ensure_ascii=style == 2) + colon + _dump(v, style) for k, v in others.items()
    ]
    one = (_escape_all(key) if escape_one else json.dumps(key)) + colon + _dump(first, style)
    two = json.dumps(key) + colon + _dump(second, style)
    i = draw(st.integers(0, len(items)))
    j = draw(st.integers(i, len(items)))
    items[j:j] = [two]
    items[i:i] = [one]
    dup_obj = "{" + sep.join(items) + "}"
    # Nest it: inside a list or an object of an otherwise duplicate-free document.
    depth = draw(st.integers(0, 3))
    text = dup_obj
    for _ in range(depth):
        if draw(st.booleans()):
            text = "[" + _dump(value, style) + sep + text + "]"
        else:
            outer = draw(_TEXT)
            text = "{" + json.dumps(outer) + colon + text + "}"
    return text.encode(), key


@given(_with_duplicate())
@settings(max_examples=150)
def test_every_duplicate_found(case: tuple[bytes, str]) -> None:
    raw, key = case
    assert _check(raw) == key


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"tools":[{"name":"shell"}],"tools":[]}', "tools"),
        (b'{"a":{"b":1,"b":1}}', "b"),
        (b'[{"x":1},{"y":[{"z":1,"z":2}]}]', "z"),
        (b'{"a":1, "\\u0061":2}', "a"),
        # A "\u003a" escape cannot hide the colon a dropped duplicate loses.
        (b'{"x":"\\u003a","a":1,"a":2}', "a"),
        (b'{"x":"\\u003A\\u003a","m":"gpt","m":"gpt"}', "m"),
    ],
)
def test_duplicate_examples(raw: bytes, key: str) -> None:
    assert _check(raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}',  # the same key in different objects
        b'{"k":"\\\\u003a"}',  # text that looks like an escaped colon
        b'{"k":"\\u003a","j":"::"}',
        b'{"big":123456789012345678901234567890}',
        b"{}",
    ],
)
def test_no_duplicate_examples(raw: bytes) -> None:
    assert _check(raw) is None


def test_deep_bodies() -> None:
    # Deeper than orjson serialises (254): checked by the stdlib parser.
    assert _check(b'{"a":' * 300 + b"1" + b"}" * 300) is None
    assert _check(b'{"a":' * 300 + b'{"b":1,"b":2}' + b"}" * 300) == "b"
    # Deeper than the stdlib parser goes: refused, since it cannot be checked.
    raw = b'{"a":' * 1020 + b"1" + b"}" * 1020
    with pytest.raises(ValueError, match="nested too deeply"):
        _check(raw)


# --- model -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expect"),
    [
        ("gpt-4o-mini\x00", "U+0000"),
        ("gpt-4o\r\nX-Injected: 1", "U+000D"),
        ("claude\u2028x", "U+2028"),
        ("gpt\u202eevil", "U+202E"),
        ("x" * (MAX_MODEL_CHARS + 1), f"{MAX_MODEL_CHARS + 1} characters long"),
    ],
)
def test_model_refused(model: str, expect: str) -> None:
    problem = model_problem(model)
    assert problem is not None and expect in problem
    assert len(problem) < 300
    assert problem.isprintable()


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-mini",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-sonnet-4-5@20250929",
        "openai/gpt-4o",
        "modèle local",
        "x" * MAX_MODEL_CHARS,
    ],
)
def test_model_accepted(model: str) -> None:
    assert model_problem(model) is None


@given(st.text(max_size=300))
def test_model_problem_total(model: str) -> None:
    problem = model_problem(model)
    if problem is None:
        assert model.isprintable() and len(model) <= MAX_MODEL_CHARS
        header_value(model).encode("latin-1")  # always a valid header value
    else:
        assert problem.isprintable()


# --- echoing ---------------------------------------------------------------------------------


@given(st.text(max_size=2000), st.integers(1, 200))
def test_quote_input_bounded_and_printable(value: str, limit: int) -> None:
    quoted = quote_input(value, limit)
    assert quoted.isprintable()
    # 6 chars per escaped character, plus the quotes and the "… (N chars)" suffix.
    assert len(quoted) <= 10 * limit + 30
    if len(value) <= limit and value.isprintable():
        assert json.loads(quoted) == value


def test_quote_input_non_strings() -> None:
    assert quote_input(["a\nb"] * 100).endswith("chars)")
    assert "\n" not in quote_input(["a\nb"])
    assert quote_input(12) == "12"


@given(st.text(max_size=50))
def test_header_value_is_a_valid_header(value: str) -> None:
    out = header_value(value)
    assert out.isascii() and out.isprintable() and out == out.strip()


def test_pretty_log_escapes_line_breaks() -> None:
    record = logging.LogRecord(
        "t", logging.INFO, "", 0, "model=%s", ("gpt\r\n12:00:00 INFO fake line",), None
    )
    line = PrettyFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\\u000d\\u000a" in line


# --- headers ---------------------------------------------------------------------------------


def test_header_caps() -> None:
    ok = [(f"x-h{i}", "v") for i in range(MAX_REQUEST_HEADERS)]
    assert header_problem(ok) is None
    many = [*ok, ("x-one-more", "v")]
    problem = header_problem(many)
    assert problem is not None and f"at most {MAX_REQUEST_HEADERS}" in problem
    big = [("x-big", "v" * MAX_REQUEST_HEADER_BYTES)]
    problem = header_problem(big)
    assert problem is not None and "bytes" in problem


def test_duplicate_check_handles_non_ascii_equal_forms() -> None:
    # Same key written raw and with a surrogate-pair escape.
    raw = '{"😀":1,"\\ud83d\\ude00":2}'.encode()
    assert _check(raw) == "😀"
