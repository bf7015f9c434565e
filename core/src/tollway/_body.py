"""Request body size limits and ``Content-Encoding`` decoding (SPEC §2).

The gateway caps a request body at ``SERVER_MAX_REQUEST_BODY_BYTES`` (0 or unset: 32 MiB) twice:
once while the raw bytes arrive (:class:`BodyReader`), and once more on the decoded bytes when the
client sent a ``Content-Encoding`` (:func:`decode_body`). Decoding never holds more than the cap
plus one bounded step of output, so a compression bomb costs at most that much memory and the
time to decompress ``limit`` bytes.

Exceptions::

    Exception
     ├── BodyTooLarge   -> 413 payload_too_large
     └── BadEncoding    -> 400 bad_request
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli
import zstandard

from tollway._input import quote_input

__all__ = [
    "DEFAULT_MAX_BODY",
    "BadEncoding",
    "BodyReader",
    "BodyTooLarge",
    "decode_body",
    "effective_limit",
]

DEFAULT_MAX_BODY = 32 * 1024 * 1024
"""The body cap when ``SERVER_MAX_REQUEST_BODY_BYTES`` is 0 or unset (32 MiB)."""

# Output produced per zlib/brotli call: bounds how far past the limit one step can go.
_OUT_STEP = 1 << 20
# Compressed input is fed in slices doubling from _SLICE_START up to _SLICE_MAX, so a member
# or frame that ends early leaves little input to copy aside, and a long one costs few calls.
_SLICE_START = 1 << 10
_SLICE_MAX = 1 << 20
# A zstd block (<= 128 KiB of output) needs at least 4 bytes of input (3-byte header + 1 RLE
# byte), so n input bytes decode to at most (n / 4 + 1) * 128 KiB = 32 KiB * n + 128 KiB: a
# slice of budget >> 15 bytes (at least _ZSTD_MIN_SLICE) cannot overshoot by more than ~2 MiB.
_ZSTD_RATIO = 15
_ZSTD_MIN_SLICE = 64
_ZSTD_MAX_HEADER = 18
# Concatenated gzip members / zstd frames accepted in one body. Each costs a decompressor set-up,
# so an unbounded count would let a 32 MiB body of empty members burn seconds of CPU.
_MAX_MEMBERS = 4096
_GZIP_MAGIC = b"\x1f\x8b"

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS

_SUPPORTED = "gzip, deflate, br, zstd and identity"


def _human(n: int) -> str:
    """``n`` bytes as a short human figure (``32 MiB``, ``1.5 KiB``, ``100 bytes``)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


class BodyTooLarge(Exception):
    """The request body (raw, or decoded from its ``Content-Encoding``) is over the cap.

    ``limit`` is the cap in bytes; ``encoding`` is the ``Content-Encoding`` whose decoded output
    overflowed, or None when the raw body itself did; ``message`` names the cap.
    """

    def __init__(self, limit: int, encoding: str | None = None) -> None:
        self.limit = limit
        self.encoding = encoding
        what = (
            "the request body"
            if encoding is None
            else f"the request body, once decoded from Content-Encoding {encoding},"
        )
        self.message = (
            f"{what} is larger than this gateway's limit of {limit} bytes ({_human(limit)}); "
            "send a smaller request, or ask the operator to raise SERVER_MAX_REQUEST_BODY_BYTES"
        )
        super().__init__(self.message)

    def __reduce__(self) -> tuple[type[BodyTooLarge], tuple[int, str | None]]:
        """Pickle through the constructor arguments."""
        return (type(self), (self.limit, self.encoding))


class BadEncoding(Exception):
    """The body could not be decoded: unknown ``Content-Encoding``, corrupt or truncated data.

    ``encoding`` names the coding that failed, ``reason`` says why, ``message`` says both.
    """

    def __init__(self, encoding: str, reason: str) -> None:
        self.encoding = encoding
        self.reason = reason
        self.message = (
            f"could not decode the request body as Content-Encoding {quote_input(encoding)}: "
            f"{reason}"
        )
        super().__init__(self.message)

    def __reduce__(self) -> tuple[type[BadEncoding], tuple[str, str]]:
        """Pickle through the constructor arguments."""
        return (type(self), (self.encoding, self.reason))


def effective_limit(configured: int | None) -> int:
    """The body cap in bytes for a configured ``SERVER_MAX_REQUEST_BODY_BYTES`` (0/None: 32 MiB)."""
    if not configured or configured < 0:
        return DEFAULT_MAX_BODY
    return configured


class BodyReader:
    """Accumulates a raw body as it arrives and refuses it as soon as it passes ``limit``.

    ``feed`` raises :class:`BodyTooLarge` once the running total exceeds the limit, before the
    offending chunk is kept; ``data`` is everything fed so far.
    """

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        """Start an empty body capped at ``limit`` bytes."""
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def limit(self) -> int:
        """The cap in bytes."""
        return self._limit

    @property
    def size(self) -> int:
        """Bytes accepted so far."""
        return self._size

    def feed(self, chunk: bytes) -> None:
        """Add one received chunk; raise :class:`BodyTooLarge` if the total passes the limit."""
        size = self._size + len(chunk)
        if size > self._limit:
            raise BodyTooLarge(self._limit)
        if chunk:
            self._parts.append(chunk)
            self._size = size

    @property
    def data(self) -> bytes:
        """The whole body received so far."""
        parts = self._parts
        if not parts:
            return b""
        if len(parts) > 1:
            joined = b"".join(parts)
            parts[:] = [joined]
            return joined
        return parts[0]


def decode_body(data: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, br, zstd, identity; stacked, case-insensitive).

    Codings listed as ``a, b`` were applied in that order and are undone in reverse. Raises
    :class:`BodyTooLarge` when any decoded stage exceeds ``limit`` (without materialising more
    than the limit plus one bounded step) and :class:`BadEncoding` for an unknown coding or
    corrupt/truncated data. An empty body decodes to an empty body whatever the header says.
    """
    if content_encoding:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        for coding in reversed(codings):
            if not coding or coding == "identity":
                continue
            decoder = _DECODERS.get(coding)
            if decoder is None:
                raise BadEncoding(coding, f"unsupported coding; this gateway accepts {_SUPPORTED}")
            if data:
                data = decoder(data, limit)
    if len(data) > limit:
        raise BodyTooLarge(limit)
    return data


def _inflate(data: bytes, wbits: int, limit: int, name: str) -> bytes:
    """zlib-family decode (gzip members, zlib or raw deflate) of at most ``limit`` bytes.

    Input goes in slices doubling from 1 KiB to 1 MiB, so what zlib copies aside (the
    ``unconsumed_tail`` when an output step fills, the ``unused_data`` after a gzip member)
    stays small. Output comes in steps of at most 1 MiB (zlib's ``max_length``), so a bomb
    holds the limit plus one step, never a whole limit-sized buffer being joined.
    """
    parts: list[bytes] = []
    total = 0
    n = len(data)
    pos = 0
    members = 0
    with memoryview(data) as view:
        while True:
            members += 1
            if members > _MAX_MEMBERS:
                raise BadEncoding(name, f"more than {_MAX_MEMBERS} concatenated members")
            d = zlib.decompressobj(wbits)
            size = _SLICE_START
            while True:
                pending: bytes | memoryview = view[pos : pos + size]
                pos += len(pending)
                while True:
                    step = min(limit + 1 - total, _OUT_STEP)
                    try:
                        out = d.decompress(pending, step)
                    except zlib.error as exc:
                        raise BadEncoding(name, f"the data is corrupt ({exc})") from None
                    total += len(out)
                    if total > limit:
                        raise BodyTooLarge(limit, name)
                    if out:
                        parts.append(out)
                    if d.eof or len(out) < step:
                        break  # stream end, or all input used and all output drained
                    pending = d.unconsumed_tail
                if d.eof:
                    pos -= len(d.unused_data)
                    break
                if pos >= n:
                    raise BadEncoding(
                        name, "the data is truncated (the compressed stream ends early)"
                    )
                if size < _SLICE_MAX:
                    size <<= 1
            if pos >= n:
                break
            if wbits == _GZIP_WBITS and data.startswith(_GZIP_MAGIC, pos):
                continue  # gzip allows several members back to back
            if data.count(0, pos) == n - pos:
                break  # trailing NUL padding, tolerated as by the gzip module
            raise BadEncoding(name, "unexpected bytes after the end of the compressed stream")
    if not parts:
        return b""
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _looks_zlib(data: bytes) -> bool:
    """True when ``data`` starts with a valid zlib (RFC 1950) header."""
    return (
        len(data) >= 2
        and data[0] & 0x0F == 8
        and data[0] >> 4 <= 7
        and ((data[0] << 8) | data[1]) % 31 == 0
    )


def _deflate(data: bytes, limit: int) -> bytes:
    """HTTP ``deflate``: zlib-wrapped per RFC 9110, with raw deflate accepted as a fallback."""
    if not _looks_zlib(data):
        return _inflate(data, _RAW_WBITS, limit, "deflate")
    try:
        return _inflate(data, _ZLIB_WBITS, limit, "deflate")
    except BadEncoding as first:
        # A raw stream can start with bytes that happen to form a zlib header.
        try:
            return _inflate(data, _RAW_WBITS, limit, "deflate")
        except BadEncoding:
            raise first from None


def _brotli(data: bytes, limit: int) -> bytes:
    """Brotli decode in output steps of about ``_OUT_STEP`` bytes, stopping past ``limit``.

    ``output_buffer_limit`` stops the buffer growing once it reaches the value, so one step
    can exceed it by one growth increment (under 1 MiB more). All input goes in the first call;
    later calls pass none, as the API requires while output is pending.
    """
    d = brotli.Decompressor()
    parts: list[bytes] = []
    total = 0
    try:
        out: bytes = d.process(data, output_buffer_limit=min(limit + 1 - total, _OUT_STEP))
        while True:
            total += len(out)
            if total > limit:
                raise BodyTooLarge(limit, "br")
            if out:
                parts.append(out)
            if d.is_finished():
                break
            if not out:
                # No progress with no input left: the stream stops before its end.
                raise BadEncoding("br", "the data is truncated (the compressed stream ends early)")
            out = d.process(b"", output_buffer_limit=min(limit + 1 - total, _OUT_STEP))
    except brotli.error as exc:
        raise BadEncoding("br", f"the data is corrupt ({exc})") from None
    if not parts:
        return b""
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _zstd(data: bytes, limit: int) -> bytes:
    """Zstandard decode, frame by frame, never producing much more than ``limit`` bytes.

    A frame whose header declares a size over the remaining budget is refused at once. Input is
    fed in slices small enough that one call cannot overshoot the remaining budget by more than
    ~2 MiB whatever the frame claims (libzstd's decompressobj has no output cap of its own).
    """
    dctx = zstandard.ZstdDecompressor()
    n = len(data)
    parts: list[bytes] = []
    total = 0
    pos = 0
    frames = 0
    with memoryview(data) as view:
        try:
            while pos < n:
                frames += 1
                if frames > _MAX_MEMBERS:
                    raise BadEncoding("zstd", f"more than {_MAX_MEMBERS} concatenated frames")
                try:
                    declared = zstandard.frame_content_size(data[pos : pos + _ZSTD_MAX_HEADER])
                except zstandard.ZstdError:
                    declared = -1  # skippable or corrupt: let the decompressor judge
                if declared > limit - total:
                    raise BodyTooLarge(limit, "zstd")
                dobj = dctx.decompressobj()
                size = _SLICE_START
                while True:
                    step = min(size, max(_ZSTD_MIN_SLICE, (limit + 1 - total) >> _ZSTD_RATIO))
                    piece = view[pos : pos + step]
                    pos += len(piece)
                    out = dobj.decompress(piece)
                    total += len(out)
                    if total > limit:
                        raise BodyTooLarge(limit, "zstd")
                    if out:
                        parts.append(out)
                    if dobj.eof:
                        pos -= len(dobj.unused_data)
                        break
                    if pos >= n:
                        raise BadEncoding(
                            "zstd", "the data is truncated (the compressed frame ends early)"
                        )
                    if size < _SLICE_MAX:
                        size <<= 1
        except zstandard.ZstdError as exc:
            raise BadEncoding("zstd", f"the data is corrupt ({exc})") from None
    if not parts:
        return b""
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _gzip(data: bytes, limit: int) -> bytes:
    """HTTP ``gzip`` (one or more RFC 1952 members)."""
    return _inflate(data, _GZIP_WBITS, limit, "gzip")


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}
