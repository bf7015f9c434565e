"""A cached answer and its byte encoding (what Redis stores).

Layout: 13 ASCII digits of the creation time in Unix milliseconds (so the Redis script can
judge an entry's age without parsing it), the magic ``TWRC1``, one line of JSON metadata, then
the payload: the response body, or the stream's events back to back (their lengths are in the
metadata, so a replay sends them one event at a time, as they were first relayed).
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

__all__ = ["Entry", "EntryFormatError", "decode", "encode"]

_MAGIC = b"TWRC1"
_STAMP = 13


class EntryFormatError(ValueError):
    """Bytes that are not an encoded :class:`Entry` (another version, or corrupt)."""


@attrs.frozen
class Entry:
    """A successful answer as the client first received it."""

    status: int
    #: Complete body of a non-streaming answer (None for a stream).
    body: bytes | None
    #: SSE event blocks of a streaming answer, each with its blank line (None for a body).
    events: tuple[bytes, ...] | None
    #: Unix milliseconds when the answer was stored.
    created_ms: int
    #: Who produced it (for ``X-LangWatch-Provider`` / ``X-LangWatch-Model`` on a replay).
    provider: str | None = None
    provider_type: str | None = None
    model: str | None = None

    @property
    def size(self) -> int:
        """Payload bytes (what the size limits count)."""
        if self.body is not None:
            return len(self.body)
        return sum(len(e) for e in self.events or ())

    @property
    def stream(self) -> bool:
        return self.events is not None


def encode(entry: Entry) -> bytes:
    """The entry as bytes (see the module docstring)."""
    meta: dict[str, Any] = {"s": entry.status}
    if entry.provider is not None:
        meta["p"] = entry.provider
    if entry.provider_type is not None:
        meta["t"] = entry.provider_type
    if entry.model is not None:
        meta["m"] = entry.model
    if entry.events is not None:
        meta["e"] = [len(e) for e in entry.events]
        payload = b"".join(entry.events)
    else:
        payload = entry.body or b""
    stamp = b"%013d" % entry.created_ms
    return b"".join((stamp, _MAGIC, orjson.dumps(meta), b"\n", payload))


def decode(data: bytes) -> Entry:
    """The entry encoded in ``data``; :class:`EntryFormatError` when it is not one."""
    if len(data) < _STAMP + len(_MAGIC) or data[_STAMP : _STAMP + len(_MAGIC)] != _MAGIC:
        raise EntryFormatError("not a response-cache entry of this version")
    start = _STAMP + len(_MAGIC)
    newline = data.find(b"\n", start)
    if newline < 0:
        raise EntryFormatError("entry metadata is not terminated")
    try:
        created_ms = int(data[:_STAMP])
        meta = orjson.loads(data[start:newline])
        status = int(meta["s"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise EntryFormatError(f"entry metadata is corrupt: {exc}") from None
    payload = data[newline + 1 :]
    events: tuple[bytes, ...] | None = None
    body: bytes | None = None
    lengths = meta.get("e")
    if lengths is not None:
        if not isinstance(lengths, list) or sum(lengths) != len(payload):
            raise EntryFormatError("entry event lengths do not match its payload")
        out = []
        pos = 0
        for n in lengths:
            out.append(payload[pos : pos + n])
            pos += n
        events = tuple(out)
    else:
        body = payload
    return Entry(
        status=status,
        body=body,
        events=events,
        created_ms=created_ms,
        provider=meta.get("p"),
        provider_type=meta.get("t"),
        model=meta.get("m"),
    )
