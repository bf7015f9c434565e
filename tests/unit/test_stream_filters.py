"""The relay's stream filters (``ctx.stream_filters``): chaining, holding back, flushing at the
end, and failing open when a filter raises."""

from __future__ import annotations

import asyncio

from tollway import RequestContext, StreamFilter, Verdict
from tollway._reply import _end, _feed


class Hold:
    """Holds everything back until the end; blocks a chunk containing ``block``."""

    def __init__(self) -> None:
        self.held = b""

    async def feed(self, ctx: RequestContext, chunk: bytes) -> bytes | Verdict:
        if b"block" in chunk:
            return Verdict("block", "no")
        self.held += chunk
        return b""

    async def end(self, ctx: RequestContext) -> bytes | Verdict:
        out, self.held = self.held, b""
        return out


class Upper:
    async def feed(self, ctx: RequestContext, chunk: bytes) -> bytes | Verdict:
        await asyncio.sleep(0)
        return chunk.upper()

    async def end(self, ctx: RequestContext) -> bytes | Verdict:
        return b""


class Broken(Hold):
    async def feed(self, ctx: RequestContext, chunk: bytes) -> bytes | Verdict:
        if self.held:
            raise RuntimeError("bug")
        return await super().feed(ctx, chunk)


def _run(
    filters: list[object], chunks: list[bytes]
) -> tuple[list[bytes | Verdict], RequestContext]:
    ctx = RequestContext(
        request_id="grq_test",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 32,
        span_id="0" * 16,
    )

    async def go() -> list[bytes | Verdict]:
        out = [await _feed(ctx, filters, c) for c in chunks]
        out.append(await _end(ctx, filters))
        return out

    return asyncio.run(go()), ctx


def test_filters_chain_in_order_and_flush_through_the_later_ones() -> None:
    assert isinstance(Hold(), StreamFilter)
    out, _ = _run([Hold(), Upper()], [b"data: a\n\n", b"data: b\n\n"])
    # Held by the first, then passed through the second at the end.
    assert out == [b"", b"", b"DATA: A\n\nDATA: B\n\n"]


def test_a_block_ends_the_chain() -> None:
    out, ctx = _run([Upper(), Hold()], [b"data: a\n\n", b"data: block\n\n"])
    assert out[0] == b""
    assert out[1] == b""  # upper-cased: "BLOCK" does not match the Hold filter
    out, ctx = _run([Hold(), Upper()], [b"data: block\n\n"])
    assert out[0] == Verdict("block", "no")
    assert ctx.verdicts == [("stream_chunk", "", Verdict("block", "no"))]


def test_a_filter_that_raises_fails_open_without_losing_held_bytes() -> None:
    filters: list[object] = [Broken()]
    out, _ = _run(filters, [b"data: a\n\n", b"data: b\n\n", b"data: c\n\n"])
    assert out == [b"", b"data: a\n\ndata: b\n\n", b"data: c\n\n", b""]
    assert filters == []  # dropped after it failed
