"""Server-sent events framing (WHATWG HTML §9.2) for streamed responses (SPEC §2).

The gateway passes upstream SSE through byte-for-byte and flushes per event, so it needs to know
where each event ends without re-serialising anything: :class:`SSESplitter` cuts the incoming
bytes into event blocks exactly as received. :func:`event_fields` reads one block (for usage
accounting, guardrails); :func:`format_event` and :func:`error_event` write gateway-authored ones.

Line endings are CRLF, LF or CR (CR LF is always one line ending), and an event ends at a blank
line. A stream that uses only LF (every major provider) takes a fast path: one ``bytes.find``
scan per event boundary, no per-line work.
"""

from __future__ import annotations

from itertools import pairwise

import orjson

__all__ = ["SSESplitter", "error_event", "event_fields", "format_event"]

_LF = 10
_CR = 13
_BOM = b"\xef\xbb\xbf"

# A blank line begins right after a line ending. Any LF ends a line, and so does a CR that is
# not followed by LF, so the last byte of a line ending followed by the first byte of another is
# one of these pairs (CR followed by LF is a single line ending, never a blank line).
_PAIRS_CR = (b"\n\n", b"\n\r", b"\r\r")


def _scan(data: bytes | bytearray, lo: int, cr: bool) -> tuple[list[int], int]:
    """Find the ends of the complete event blocks in ``data`` (which starts at a line start).

    ``lo`` is where earlier scans of the same bytes left off. Returns the end offsets (each just
    past a blank line's ending) and the offset, relative to the last end, to resume from once
    more bytes are appended.
    """
    ends: list[int] = []
    n = len(data)
    start = 0
    if not cr:
        while start < n:
            if data[start] == _LF:  # a blank line right at the start of a block
                start += 1
                ends.append(start)
                continue
            i = data.find(b"\n\n", lo if lo > start else start)
            if i < 0:
                break
            start = i + 2
            ends.append(start)
        return ends, max(0, n - 1 - start)

    # General path: LF, CRLF and CR. nxt[k] caches the next occurrence of _PAIRS_CR[k]
    # (-1: none up to the end), so every byte is searched at most once per pair.
    nxt = [-2, -2, -2]
    while start < n:
        c = data[start]
        if c in (_LF, _CR):
            j = start  # a blank line right at the start of a block
        else:
            s = lo if lo > start else start
            best = -1
            for k in range(3):
                p = nxt[k]
                if p != -1 and p < s:
                    p = nxt[k] = data.find(_PAIRS_CR[k], s)
                if p >= 0 and (best < 0 or p < best):
                    best = p
            if best < 0:
                break
            j = best + 1
        if data[j] == _LF:
            end = j + 1
        elif j + 1 < n:
            end = j + 2 if data[j + 1] == _LF else j + 1
        else:
            # A CR as the very last byte: it ends the block, but an LF arriving next would
            # belong to it too. Wait for the next byte so the cut never depends on chunking.
            return ends, max(0, j - 1 - start)
        start = end
        ends.append(end)
    return ends, max(0, n - 1 - start)


class SSESplitter:
    """Incremental splitter of an SSE byte stream into complete event blocks.

    ``feed`` returns every block completed by the new bytes, each including its terminating
    blank line, byte-identical to the input, so ``b"".join(all outputs) + tail()`` is exactly the
    input. The cuts do not depend on how the stream was chunked; the one consequence is that a
    block ended by a bare CR as the last byte received is held until the next byte shows whether
    an LF belongs to it (a stream ending there leaves it in :meth:`tail`).
    """

    __slots__ = ("_buf", "_cr", "_lo")

    def __init__(self) -> None:
        """Start at the beginning of a stream."""
        self._buf = bytearray()
        self._lo = 0
        self._cr = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add received bytes; return the event blocks they complete, in order."""
        if not chunk:
            return []
        if not self._cr and b"\r" in chunk:
            self._cr = True  # from now on, look for CR line endings too
        buf = self._buf
        if not buf:
            # Common case: the previous chunk ended on an event boundary. Slice the chunk itself
            # (a chunk that is exactly one event is returned as is).
            ends, self._lo = _scan(chunk, 0, self._cr)
            if not ends:
                buf += chunk
                return []
            last = ends[-1]
            if last < len(chunk):
                buf += chunk[last:]
            if len(ends) == 1:
                return [chunk[:last]]
            out = [chunk[: ends[0]]]
            out.extend(chunk[a:b] for a, b in pairwise(ends))
            return out
        buf += chunk
        ends, self._lo = _scan(buf, self._lo, self._cr)
        if not ends:
            return []
        with memoryview(buf) as view:
            out = [view[: ends[0]].tobytes()]
            out.extend(view[a:b].tobytes() for a, b in pairwise(ends))
        del buf[: ends[-1]]
        return out

    def tail(self) -> bytes:
        """The bytes received after the last complete block (an unfinished event)."""
        return bytes(self._buf)

    @property
    def buffered(self) -> int:
        """How many bytes are held waiting for an event to complete (for a size guard)."""
        return len(self._buf)


def event_fields(block: bytes) -> tuple[str | None, bytes]:
    """The ``(event name, data)`` of one event block, per the WHATWG SSE parsing rules.

    ``data:`` lines are joined with LF; one space after the colon is dropped; lines starting with
    ``:`` are comments; ``id``, ``retry`` and unknown fields are ignored. The name is None when
    the block has no (or an empty) ``event:`` field, i.e. the default ``message`` event.
    """
    if block.endswith(b"\n\n"):
        # Fast paths: the shapes of nearly every provider event, "data: …" alone (OpenAI) or
        # after one "event: …" line (Anthropic).
        if block.startswith(b"data: "):
            body = block[6:-2]
            if b"\n" not in body and b"\r" not in body:
                return None, body
        elif block.startswith(b"event: ") and b"\r" not in block:
            nl = block.find(b"\n", 7)
            if block.startswith(b"data: ", nl + 1):
                body = block[nl + 7 : -2]
                if b"\n" not in body:
                    raw = block[7:nl]
                    return (raw.decode("utf-8", "replace") if raw else None), body
    if block.startswith(_BOM):
        block = block[3:]
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    event: bytes | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # empty, or a ":" comment
            continue
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value
    name = event.decode("utf-8", "replace") if event else None
    return name, b"\n".join(data)


def format_event(data: bytes, event: str | None = None) -> bytes:
    """Serialise one event: ``event: X`` (when given), a ``data:`` line per line of ``data``.

    Line endings inside ``data`` (CRLF, CR, LF) all become line breaks between ``data:`` lines,
    so the receiver gets them back as LF.
    """
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    frame = b"data: " + data.replace(b"\n", b"\ndata: ") + b"\n\n"
    if event is None:
        return frame
    if "\n" in event or "\r" in event:
        raise ValueError("an SSE event name cannot contain a line break")
    return b"event: " + event.encode("utf-8") + b"\n" + frame


def error_event(
    message: str,
    code: str = "upstream_mid_stream_failure",
    type_: str = "provider_error",
) -> bytes:
    """The terminal ``event: error`` frame sent when a stream fails after its first byte.

    Its data is ``{"type":"error","error":{"type":…,"code":…,"message":…}}`` (SPEC §2): the
    openai SDK raises on the ``error`` key, the anthropic SDK on the ``event: error`` line.
    """
    payload = orjson.dumps(
        {"type": "error", "error": {"type": type_, "code": code, "message": message}}
    )
    return b"event: error\ndata: " + payload + b"\n\n"
