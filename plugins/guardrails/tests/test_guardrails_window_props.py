"""Property tests of the stream window: bytes are never reordered, dropped or changed unless an
evaluator rewrote their text, however the stream is chunked; rewrites spread back over deltas
always join to the rewritten text."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tollway_guardrails._window import Window, split_rewrite

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def _chat_event(text: str | None) -> bytes:
    delta = {"role": "assistant"} if text is None else {"content": text}
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"


def _anthropic_event(text: str | None) -> bytes:
    if text is None:
        return b'event: ping\ndata: {"type": "ping"}\n\n'
    doc = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return b"event: content_block_delta\ndata: " + orjson.dumps(doc) + b"\n\n"


EVENTS = {"chat": _chat_event, "messages": _anthropic_event}


@given(
    endpoint=st.sampled_from(sorted(EVENTS)),
    texts=st.lists(st.one_of(TEXT, st.none()), max_size=12),
    hold=st.integers(0, 40),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    cut_short=st.booleans(),
)
def test_the_window_relays_every_byte_in_order(
    endpoint: str, texts: list[str | None], hold: int, cuts: list[int], cut_short: bool
) -> None:
    stream = b"".join(EVENTS[endpoint](t) for t in texts) + b"[DONE]\n\n"
    if cut_short:
        stream = stream[: len(stream) // 2]  # an upstream cut mid-event
    window = Window(endpoint, hold)
    points = sorted({min(c, len(stream)) for c in cuts})
    out = b""
    start = 0
    for point in [*points, len(stream)]:
        window.add(stream[start:point])
        start = point
        out += window.release()
    out += window.drain()
    assert out == stream


@given(window=st.integers(0, 40), texts=st.lists(TEXT.filter(bool), min_size=1, max_size=10))
def test_held_text_never_exceeds_the_window(window: int, texts: list[str]) -> None:
    w = Window("chat", window)
    for text in texts:
        w.add(_chat_event(text))
        w.release()
        # Events are never cut: one bigger than the window is not held at all.
        assert sum(len(t) for t in w.texts) <= window


@given(parts=st.lists(TEXT, min_size=1, max_size=6), new=TEXT)
def test_a_rewrite_spread_over_deltas_joins_to_the_rewrite(parts: list[str], new: str) -> None:
    spread = split_rewrite(parts, new)
    assert len(spread) == len(parts)
    assert "".join(spread) == new


def test_a_split_pattern_goes_to_the_delta_where_it_starts() -> None:
    spread = split_rewrite(["mail alice@exa", "mple.com now"], "mail [EMAIL] now")
    assert spread == ["mail [EMAIL]", " now"]
