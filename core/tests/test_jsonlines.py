"""Newline-delimited JSON splitting (tollway.jsonlines) and which lanes the core translates."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.formats import TranslationError
from tollway.jsonlines import JsonLineSplitter
from tollway.provider import core_translated

DOCS = st.lists(
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=10)),
        max_size=3,
    ),
    max_size=6,
)


@given(
    docs=DOCS,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    final_newline=st.booleans(),
    blank=st.booleans(),
)
def test_any_chunking_gives_the_same_documents(
    docs: list[dict[str, object]], cuts: list[int], final_newline: bool, blank: bool
) -> None:
    sep = "\n\n" if blank else "\n"
    text = sep.join(json.dumps(d) for d in docs) + ("\n" if final_newline else "")
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    splitter = JsonLineSplitter()
    out = [doc for piece in pieces for doc in splitter.feed(piece)] + splitter.end()
    assert out == docs


def test_a_line_that_is_not_json_names_it() -> None:
    with pytest.raises(TranslationError, match="not JSON"):
        JsonLineSplitter().feed(b'{"ok": 1}\nnot json\n')
    splitter = JsonLineSplitter()
    assert splitter.feed(b'{"a": 1}\n{"b"') == [{"a": 1}]
    with pytest.raises(TranslationError):
        splitter.end()


@pytest.mark.parametrize(
    ("endpoints", "native", "expected"),
    [
        # Responses clients go through chat whenever the adapter serves chat one way or another.
        ({"chat"}, {"chat"}, {"messages", "responses"}),
        ({"messages"}, {"messages"}, {"chat", "responses"}),
        ({"chat", "messages"}, {"chat"}, {"responses"}),
        ({"chat", "messages"}, set(), {"responses"}),  # a wire of its own, translating itself
        ({"chat", "responses"}, {"chat", "responses"}, {"messages"}),
        ({"embeddings"}, {"embeddings"}, set()),
    ],
)
def test_core_translates_the_missing_hub_lane(
    endpoints: set[str], native: set[str], expected: set[str]
) -> None:
    assert core_translated(frozenset(endpoints), frozenset(native)) == expected
