"""Tests of tollway._body: body caps and Content-Encoding decoding (SPEC §2)."""

from __future__ import annotations

import gzip
import pickle
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from tollway._body import (
    DEFAULT_MAX_BODY,
    BadEncoding,
    BodyReader,
    BodyTooLarge,
    decode_body,
    effective_limit,
)

MiB = 1 << 20
GiB = 1 << 30
ZEROS = bytes(MiB)


# --- encoders --------------------------------------------------------------------------------


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


def zstd_stream(data: bytes) -> bytes:
    """A zstd frame that does not declare its size (as streaming compressors write)."""
    c = zstandard.ZstdCompressor().compressobj()
    return c.compress(data) + c.flush()


# --- bombs: 1 GiB of zeros, built by streaming compression without holding 1 GiB ------------


def _deflate_zeros(total: int) -> bytes:
    """Raw deflate of ``total`` zero bytes (a whole number of MiB), built in milliseconds.

    After the first MiB the compressor's window is all zeros, so every later MiB compresses
    (with a sync flush) to the same bytes; repeating them yields a valid stream.
    """
    count = total // MiB
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = c.compress(ZEROS) + c.flush(zlib.Z_SYNC_FLUSH)
    repeat = c.compress(ZEROS) + c.flush(zlib.Z_SYNC_FLUSH)
    assert c.compress(ZEROS) + c.flush(zlib.Z_SYNC_FLUSH) == repeat
    last = c.compress(ZEROS) + c.flush()
    return first + repeat * (count - 2) + last


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    raw = _deflate_zeros(GiB)
    adler = ((GiB % 65521) << 16) | 1  # adler32 of zeros: A = 1, B = n mod 65521
    out = {
        # 1024 gzip members of 1 MiB each (RFC 1952 allows concatenated members)
        "gzip": zlib.compress(ZEROS, 9, wbits=31) * 1024,
        "deflate": b"\x78\xda" + raw + struct.pack(">I", adler),
        "deflate-raw": raw,
    }
    br = brotli.Compressor(quality=1)
    out["br"] = b"".join([br.process(ZEROS) for _ in range(1024)] + [br.finish()])
    zs = zstandard.ZstdCompressor(level=1).compressobj()
    out["zstd"] = b"".join([zs.compress(ZEROS) for _ in range(1024)] + [zs.flush()])
    return out


def test_bombs_are_valid() -> None:
    # The construction trick, checked at a size that is cheap to inflate fully.
    raw = _deflate_zeros(8 * MiB)
    assert zlib.decompress(raw, -zlib.MAX_WBITS) == bytes(8 * MiB)
    adler = (((8 * MiB) % 65521) << 16) | 1
    assert zlib.decompress(b"\x78\xda" + raw + struct.pack(">I", adler)) == bytes(8 * MiB)


@pytest.mark.parametrize("kind", ["gzip", "deflate", "deflate-raw", "br", "zstd"])
@pytest.mark.parametrize("limit", [8 * MiB, DEFAULT_MAX_BODY])
def test_one_gib_bomb_is_refused_fast_and_small(
    bombs: dict[str, bytes], kind: str, limit: int
) -> None:
    data = bombs[kind]
    encoding = kind.split("-")[0]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(BodyTooLarge) as info:
            decode_body(data, encoding, limit)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.limit == limit
    assert info.value.encoding == encoding
    assert peak < limit + 4 * MiB, f"{kind}: peak {peak / MiB:.1f} MiB for a {limit >> 20} MiB cap"
    assert elapsed < 3.0, f"{kind}: {elapsed:.2f} s"


def test_zstd_frame_declaring_a_huge_size_is_refused_before_decoding() -> None:
    c = zstandard.ZstdCompressor(level=1).compressobj(size=GiB)
    data = b"".join([c.compress(ZEROS) for _ in range(1024)] + [c.flush()])
    assert zstandard.frame_content_size(data) == GiB
    started = time.perf_counter()
    with pytest.raises(BodyTooLarge):
        decode_body(data, "zstd", 8 * MiB)
    assert time.perf_counter() - started < 0.1


def test_zstd_frame_lying_about_its_size_stays_bounded() -> None:
    # Header says 1000 bytes, frame holds 64 MiB: libzstd does not stop at the declared size
    # by itself, so the decoder's own input slicing must.
    c = zstandard.ZstdCompressor(level=1).compressobj(size=64 * MiB)
    data = bytearray(b"".join([c.compress(ZEROS) for _ in range(64)] + [c.flush()]))
    assert data[4] == 0x80  # FCS field of 4 bytes after the window descriptor
    data[6:10] = struct.pack("<I", 1000)
    tracemalloc.start()
    try:
        with pytest.raises((BodyTooLarge, BadEncoding)):
            decode_body(bytes(data), "zstd", 8 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * MiB


# --- decoding --------------------------------------------------------------------------------

PAYLOAD = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}' * 50


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_each_coding_round_trips(encoding: str) -> None:
    assert decode_body(ENCODERS[encoding](PAYLOAD), encoding, MiB) == PAYLOAD


def test_identity_and_absent() -> None:
    assert decode_body(PAYLOAD, None, MiB) == PAYLOAD
    assert decode_body(PAYLOAD, "", MiB) == PAYLOAD
    assert decode_body(PAYLOAD, "identity", MiB) == PAYLOAD
    assert decode_body(PAYLOAD, " Identity , ", MiB) == PAYLOAD
    with pytest.raises(BodyTooLarge) as info:
        decode_body(PAYLOAD, None, 10)
    assert info.value.encoding is None


def test_case_insensitive_and_aliases() -> None:
    assert decode_body(gzip.compress(PAYLOAD), " GZip ", MiB) == PAYLOAD
    assert decode_body(gzip.compress(PAYLOAD), "x-gzip", MiB) == PAYLOAD
    assert decode_body(brotli.compress(PAYLOAD), "BR", MiB) == PAYLOAD
    assert decode_body(zstd_stream(PAYLOAD), "ZSTD", MiB) == PAYLOAD


def test_raw_deflate_fallback() -> None:
    assert decode_body(raw_deflate(PAYLOAD), "deflate", MiB) == PAYLOAD
    assert decode_body(raw_deflate(b""), "deflate", MiB) == b""


def test_stacked_codings_undone_in_reverse() -> None:
    # "gzip, br": gzip applied first, then br.
    data = brotli.compress(gzip.compress(PAYLOAD))
    assert decode_body(data, "gzip, br", MiB) == PAYLOAD
    data = zlib.compress(zstandard.ZstdCompressor().compress(gzip.compress(PAYLOAD)))
    assert decode_body(data, "gzip,zstd,identity,deflate", MiB) == PAYLOAD
    with pytest.raises(BadEncoding):
        decode_body(brotli.compress(gzip.compress(PAYLOAD)), "br, gzip", MiB)


def test_every_stage_is_capped() -> None:
    inner = gzip.compress(bytes(2 * MiB))
    outer = brotli.compress(inner)
    with pytest.raises(BodyTooLarge) as info:
        decode_body(outer, "gzip, br", MiB)
    assert info.value.encoding == "gzip"


def test_unknown_coding() -> None:
    with pytest.raises(BadEncoding) as info:
        decode_body(b"abc", "compress", MiB)
    assert info.value.encoding == "compress"
    assert "gzip, deflate, br, zstd" in str(info.value)
    assert '"compress"' in str(info.value)


def test_empty_body_with_a_coding() -> None:
    for encoding in ("gzip", "deflate", "br", "zstd", "gzip, br"):
        assert decode_body(b"", encoding, MiB) == b""
    with pytest.raises(BadEncoding):
        decode_body(b"", "gzip, lzma", MiB)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_exact_limit(encoding: str) -> None:
    data = ENCODERS[encoding](bytes(range(256)) * 400)
    assert len(decode_body(data, encoding, 102_400)) == 102_400
    with pytest.raises(BodyTooLarge):
        decode_body(data, encoding, 102_399)


def test_exact_limit_unsized_zstd_and_multi_member_gzip() -> None:
    data = zstd_stream(bytes(100_000))
    assert len(decode_body(data, "zstd", 100_000)) == 100_000
    with pytest.raises(BodyTooLarge):
        decode_body(data, "zstd", 99_999)
    data = gzip.compress(bytes(50_000)) * 2
    assert len(decode_body(data, "gzip", 100_000)) == 100_000
    with pytest.raises(BodyTooLarge):
        decode_body(data, "gzip", 99_999)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_truncated_is_bad_encoding(encoding: str) -> None:
    data = ENCODERS[encoding](PAYLOAD)
    for cut in (1, 4, len(data) // 2):
        with pytest.raises(BadEncoding) as info:
            decode_body(data[:-cut], encoding, MiB)
        assert info.value.encoding == encoding
        assert encoding in str(info.value)


def test_truncated_unsized_zstd() -> None:
    data = zstd_stream(PAYLOAD)
    with pytest.raises(BadEncoding, match="truncated"):
        decode_body(data[:-3], "zstd", MiB)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_garbage_is_bad_encoding(encoding: str) -> None:
    with pytest.raises(BadEncoding, match="could not decode"):
        decode_body(b"this is not compressed at all, just text", encoding, MiB)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_trailing_garbage_is_bad_encoding(encoding: str) -> None:
    with pytest.raises(BadEncoding):
        decode_body(ENCODERS[encoding](PAYLOAD) + b"junk!", encoding, MiB)


def test_gzip_members_and_padding() -> None:
    data = gzip.compress(b"one ") + gzip.compress(b"two") + bytes(16)
    assert decode_body(data, "gzip", MiB) == b"one two"


def test_member_count_is_capped() -> None:
    empty_member = gzip.compress(b"")
    started = time.perf_counter()
    with pytest.raises(BadEncoding, match="members"):
        decode_body(empty_member * 100_000, "gzip", DEFAULT_MAX_BODY)
    empty_frame = zstandard.ZstdCompressor().compress(b"")
    with pytest.raises(BadEncoding, match="frames"):
        decode_body(empty_frame * 100_000, "zstd", DEFAULT_MAX_BODY)
    assert time.perf_counter() - started < 1.0


def test_zstd_frames_and_skippable_frames() -> None:
    skippable = struct.pack("<II", 0x184D2A50, 3) + b"abc"
    data = zstd_stream(b"one ") + skippable + ENCODERS["zstd"](b"two")
    assert decode_body(data, "zstd", MiB) == b"one two"


def test_large_realistic_body() -> None:
    body = b'{"role":"user","content":"' + b"lorem ipsum dolor sit amet " * 200_000 + b'"}'
    for encoding, encode in [*ENCODERS.items(), ("zstd", zstd_stream)]:
        assert decode_body(encode(body), encoding, DEFAULT_MAX_BODY) == body


@given(st.binary(max_size=2000), st.sampled_from(sorted(ENCODERS)))
def test_round_trip_property(data: bytes, encoding: str) -> None:
    assert decode_body(ENCODERS[encoding](data), encoding, 4000) == data


@given(st.binary(max_size=300), st.sampled_from(sorted(ENCODERS)))
def test_arbitrary_input_only_raises_documented_errors(data: bytes, encoding: str) -> None:
    try:
        out = decode_body(data, encoding, 1000)
    except (BadEncoding, BodyTooLarge):
        return
    assert len(out) <= 1000


@given(st.binary(min_size=1, max_size=500), st.data())
def test_corrupted_byte_never_crashes(data: bytes, draw: st.DataObject) -> None:
    encoding = draw.draw(st.sampled_from(sorted(ENCODERS)))
    encoded = bytearray(ENCODERS[encoding](data))
    pos = draw.draw(st.integers(0, len(encoded) - 1))
    encoded[pos] ^= draw.draw(st.integers(1, 255))
    try:
        decode_body(bytes(encoded), encoding, 1000)
    except (BadEncoding, BodyTooLarge):
        pass


# --- limits and BodyReader -------------------------------------------------------------------


def test_effective_limit() -> None:
    assert effective_limit(32 * MiB) == DEFAULT_MAX_BODY
    assert effective_limit(None) == DEFAULT_MAX_BODY
    assert effective_limit(0) == DEFAULT_MAX_BODY
    assert effective_limit(-5) == DEFAULT_MAX_BODY
    assert effective_limit(1234) == 1234


def test_body_reader() -> None:
    reader = BodyReader(10)
    assert reader.data == b"" and reader.size == 0 and reader.limit == 10
    reader.feed(b"abc")
    reader.feed(b"")
    reader.feed(b"defghij")
    assert reader.size == 10
    assert reader.data == b"abcdefghij"
    assert reader.data == b"abcdefghij"
    with pytest.raises(BodyTooLarge) as info:
        reader.feed(b"k")
    assert info.value.limit == 10
    assert reader.data == b"abcdefghij"


def test_body_reader_refuses_one_big_chunk() -> None:
    reader = BodyReader(DEFAULT_MAX_BODY)
    with pytest.raises(BodyTooLarge):
        reader.feed(bytes(DEFAULT_MAX_BODY + 1))


def test_messages_name_the_cap() -> None:
    msg = str(BodyTooLarge(DEFAULT_MAX_BODY))
    assert "33554432 bytes" in msg and "32 MiB" in msg and "SERVER_MAX_REQUEST_BODY_BYTES" in msg
    assert "gzip" in str(BodyTooLarge(1536, "gzip")) and "1.5 KiB" in str(BodyTooLarge(1536))
    assert BodyTooLarge(5).message == str(BodyTooLarge(5))
    err = BadEncoding("br", "the data is corrupt")
    assert err.message == str(err) and '"br"' in str(err) and "corrupt" in str(err)


def test_errors_pickle() -> None:
    for err in (BodyTooLarge(10, "zstd"), BadEncoding("gzip", "why")):
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and str(copy) == str(err)


@pytest.mark.parametrize("size", [MiB - 1, MiB, MiB + 1, 2 * MiB, 3 * MiB + 7])
@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_output_step_boundaries(size: int, encoding: str) -> None:
    # Outputs that end exactly on (or next to) the 1 MiB output step of the decoders.
    body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    assert decode_body(ENCODERS[encoding](body), encoding, 4 * MiB) == body
    assert decode_body(ENCODERS[encoding](body), encoding, size) == body
    with pytest.raises(BodyTooLarge):
        decode_body(ENCODERS[encoding](body), encoding, size - 1)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_trailing_garbage_after_a_long_stream(encoding: str) -> None:
    body = bytes(range(256)) * 12_000  # ~3 MiB: the end is reached in a later output step
    with pytest.raises(BadEncoding):
        decode_body(ENCODERS[encoding](body) + b"junk!", encoding, 4 * MiB)
    with pytest.raises(BadEncoding):
        decode_body(ENCODERS[encoding](body)[:-7], encoding, 4 * MiB)
