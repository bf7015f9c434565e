"""Input hygiene at the edge: what the gateway accepts from a client before anything else runs.

Every check here runs before authentication side effects, admission and any upstream call, so a
refused request costs no upstream call, no rate-limit slot and no spend:

* **Request headers** (:func:`header_problem`): at most :data:`MAX_REQUEST_HEADERS` headers and
  :data:`MAX_REQUEST_HEADER_BYTES` bytes of names and values → else 431.
* **``model``** (:func:`model_problem`): printable text (no control, format or separator
  characters, so it can travel in a response header and a log line) of at most
  :data:`MAX_MODEL_CHARS` characters → else 400.
* **Duplicate keys** (:func:`duplicate_key`): a JSON object in the body that names a key twice
  → 400. JSON parsers disagree on which duplicate wins (orjson keeps the last, others the first
  or refuse), so the gateway would judge one value and the provider act on another.

Client input quoted in an error message or a log line goes through :func:`quote_input`
(JSON-quoted, so control characters are escaped, and cut to :data:`MAX_ECHO_CHARS`); a value
echoed in a response header through :func:`header_value`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

import orjson

__all__ = [
    "MAX_ECHO_CHARS",
    "MAX_MODEL_CHARS",
    "MAX_REQUEST_HEADERS",
    "MAX_REQUEST_HEADER_BYTES",
    "duplicate_key",
    "header_problem",
    "header_value",
    "model_problem",
    "quote_input",
]

#: Longest ``model`` accepted, in characters. Real ids are under 100
#: (``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` is 44).
MAX_MODEL_CHARS = 256
#: Client input quoted in an error message or a log line is cut to this many characters.
MAX_ECHO_CHARS = 64
#: Most request headers accepted (Envoy's default; Claude Code sends 19, Codex 12).
MAX_REQUEST_HEADERS = 100
#: Most bytes of header names and values accepted: Hypercorn's own cap on an HTTP/1.1 request
#: head (request line and headers), applied to HTTP/2 header lists too.
MAX_REQUEST_HEADER_BYTES = 16 * 1024

# `\u003a` / `\u003A` in the raw body: a colon the raw count of ':' misses (see duplicate_key).
_ESCAPED_COLON = re.compile(rb"\\u003[aA]")


def quote_input(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``value`` (client input) quoted for an error message or a log line.

    A string is cut to ``limit`` characters and JSON-quoted, with every character that is not
    printable escaped (``\\u0000``, ``\\r``, ``\\u2028``), so it cannot break or forge a log
    line; a cut value says its full length: ``"aaaa…" (10240 chars)``. Anything else is
    rendered with ``repr`` (which escapes the same characters) and cut the same way.
    """
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
    shown = value if len(value) <= limit else value[:limit]
    quoted = orjson.dumps(shown).decode()
    if not quoted.isprintable():
        quoted = "".join(c if c.isprintable() else _escape(c) for c in quoted)
    if len(shown) < len(value):
        return f'{quoted[:-1]}…" ({len(value)} chars)'
    return quoted


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    kind = "a control character" if unicodedata.category(ch) == "Cc" else "not printable"
    return f"U+{ord(ch):04X}{f' {name}' if name else ''} ({kind})"


def model_problem(model: str) -> str | None:
    """What is wrong with a ``model`` string (``None``: nothing), as the end of a sentence
    starting with ``'model'``; the value is quoted only in part."""
    n = len(model)
    if n > MAX_MODEL_CHARS:
        return f"is {n} characters long; the limit is {MAX_MODEL_CHARS}: {quote_input(model)}"
    if model.isprintable():
        return None
    for i, ch in enumerate(model):
        if not ch.isprintable():
            return (
                f"must be printable text, but it contains {_describe(ch)} at position {i} "
                f"({quote_input(model)})"
            )
    return None  # pragma: no cover - isprintable() was False, so the loop returned


def header_value(value: str) -> str:
    """``value`` as a response header value: printable ASCII as is, anything else (non-ASCII,
    control characters, leading or trailing blanks) percent-encoded as UTF-8."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return quote(value, safe="!#$&'()*+,/:;=?@[]~^`{|}<>\"\\")


def header_problem(headers: Collection[tuple[str, str]]) -> str | None:
    """What is wrong with the request's headers (``None``: nothing): too many, or too large.

    ``headers`` are ``(name, value)`` pairs (a mapping's ``items()``).
    """
    count = len(headers)
    if count > MAX_REQUEST_HEADERS:
        return (
            f"the request has {count} headers; this gateway accepts at most "
            f"{MAX_REQUEST_HEADERS}. Send fewer headers"
        )
    size = sum(len(name) + len(value) for name, value in headers)
    if size > MAX_REQUEST_HEADER_BYTES:
        return (
            f"the request's headers total {size} bytes; this gateway accepts at most "
            f"{MAX_REQUEST_HEADER_BYTES} bytes of header names and values. Send fewer or "
            "shorter headers"
        )
    return None


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return out


def duplicate_key(raw: bytes, parsed: Any) -> str | None:
    """The first key some JSON object in ``raw`` names twice, or ``None`` when none does.

    ``parsed`` is ``orjson.loads(raw)`` (so ``raw`` is valid JSON). The check is exact and cheap:

    1. ``orjson.dumps(parsed) == raw``: compact JSON as JavaScript and Rust clients send it is
       its own canonical form, which cannot hold a duplicate (a few µs for 50 KB).
    2. Otherwise count colons. Outside strings a colon follows every key and nothing else, and
       ``orjson.dumps`` never escapes one, so ``dumps(parsed)`` holds one colon per key
       *kept* plus the colons inside kept strings. ``raw`` holds one per key *written* plus
       the colons in all its strings, where a colon may also be written ``\\u003a``: counting
       those escapes too gives an upper bound. Equal counts ⇒ no key was dropped ⇒ no
       duplicate. A dropped duplicate always loses at least its own colon.
    3. Only when the counts differ (a duplicate, or ``\\u003a`` text) does the stdlib parser
       walk the body with an ``object_pairs_hook`` to name the key.

    Raises :class:`ValueError` for a body too deeply nested for that last step.
    """
    try:
        canonical = orjson.dumps(parsed)
    except TypeError:  # nested deeper than orjson serialises (254 levels): go to step 3
        canonical = None
    if canonical is not None:
        if canonical == raw:
            return None
        written = raw.count(b":") + len(_ESCAPED_COLON.findall(raw))
        if written == canonical.count(b":"):
            return None
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _Duplicate as dup:
        return dup.key
    except RecursionError:
        # Deeper than the stdlib parser goes (orjson accepts more): undecidable, so refused.
        raise ValueError(
            "the body is nested too deeply to be checked for duplicate keys; send a JSON "
            "object nested less than about 900 levels deep"
        ) from None
    return None
