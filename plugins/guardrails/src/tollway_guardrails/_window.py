"""The sliding window of a guarded stream: whole SSE events held back until their text is judged
together with what follows, so a pattern split across deltas (``alice@exa`` + ``mple.com``) is
seen whole.

The window keeps complete events in arrival order. :meth:`Window.release` hands back the longest
prefix of them such that the text of the events it keeps is at most ``hold_chars`` characters
(and starts with an event that has text); :meth:`Window.drain` hands back everything. Bytes are
never reordered, and only :meth:`Window.apply` (a rewrite of the judged text) changes them.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Sequence
from typing import Any

from tollway.guardrails import ParsedChunk, TextSlot, parse_chunk
from tollway.sse import SSESplitter

__all__ = ["Window", "split_rewrite"]


class _Event:
    __slots__ = ("chars", "parsed", "raw", "slots", "texts")

    def __init__(self, raw: bytes, parsed: ParsedChunk | None) -> None:
        self.set(raw, parsed)

    def set(self, raw: bytes, parsed: ParsedChunk | None) -> None:
        self.raw = raw
        self.parsed = parsed
        self.slots: list[TextSlot] = parsed.slots if parsed is not None else []
        self.texts = [slot.text for slot in self.slots]
        self.chars = sum(len(t) for t in self.texts)


class Window:
    """The held-back events of one stream."""

    __slots__ = ("_events", "_splitter", "endpoint", "hold_chars")

    def __init__(self, endpoint: str, hold_chars: int) -> None:
        self.endpoint = endpoint
        self.hold_chars = hold_chars
        self._events: list[_Event] = []
        self._splitter = SSESplitter()

    def add(self, chunk: bytes) -> bool:
        """Append a chunk's complete events; ``True`` when one of them carries text."""
        text = False
        for block in self._splitter.feed(chunk):
            parsed = parse_chunk(self.endpoint, block)
            self._events.append(_Event(block, parsed))
            text = text or parsed is not None
        return text

    @property
    def texts(self) -> list[str]:
        """The text deltas of every held event, in order."""
        return [t for e in self._events for t in e.texts]

    def streams(self) -> tuple[list[str], list[list[int]]]:
        """The held text as whole texts: the deltas of one choice or content block joined (in
        arrival order), and every complete text an event repeats (Responses' ``*.done`` and
        ``response.completed``) on its own. Returns the texts and, for each, the indexes in
        :attr:`texts` it is made of."""
        groups: dict[Any, list[int]] = {}
        for index, slot in enumerate(s for e in self._events for s in e.slots):
            key: Any = slot.path if "delta" in slot.path else index
            groups.setdefault(key, []).append(index)
        texts = self.texts
        members = list(groups.values())
        return ["".join(texts[i] for i in m) for m in members], members

    def apply(self, texts: Sequence[str]) -> None:
        """Rewrite the held events' text deltas (same length as :attr:`texts`)."""
        i = 0
        for event in self._events:
            parsed = event.parsed
            if parsed is None:
                continue
            n = len(event.texts)
            new = list(texts[i : i + n])
            i += n
            if new != event.texts:
                raw = parsed.rewrite(new)
                event.set(raw, parse_chunk(self.endpoint, raw))
        if i != len(texts):
            raise ValueError(f"{len(texts)} texts for {i} deltas")

    def release(self) -> bytes:
        """The events that leave the window: all but the last ``hold_chars`` characters' worth."""
        events = self._events
        keep = len(events)
        held = 0
        for index in range(len(events) - 1, -1, -1):
            chars = events[index].chars
            if held + chars > self.hold_chars:
                break
            held += chars
            keep = index
        # The held part starts with text: events without text before it need not wait.
        while keep < len(events) and events[keep].parsed is None:
            keep += 1
        out = b"".join(e.raw for e in events[:keep])
        del events[:keep]
        return out

    def drain(self) -> bytes:
        """Everything held, and any incomplete trailing event as received."""
        out = b"".join(e.raw for e in self._events) + self._splitter.tail()
        self._events.clear()
        return out

    def clear(self) -> None:
        self._events.clear()


_TOKEN = re.compile(r"\s+|\S+")
_MAX_DIFF_CHARS = 100_000


def split_rewrite(parts: Sequence[str], new: str) -> list[str]:
    """Spread a rewrite of ``"".join(parts)`` back over the parts.

    Word-level edits: each replaced run of words goes to the part where it starts, and the text
    it replaces is removed from every part it spans — so ``["mail alice@exa", "mple.com now"]``
    rewritten to ``"mail [EMAIL] now"`` gives ``["mail [EMAIL]", " now"]``. The parts always
    join to ``new``.
    """
    if not parts:
        return []
    joined = "".join(parts)
    if new == joined:
        return list(parts)
    if len(parts) == 1:
        return [new]
    if len(joined) > _MAX_DIFF_CHARS or len(new) > _MAX_DIFF_CHARS:
        return [new] + [""] * (len(parts) - 1)
    starts: list[int] = []
    pos = 0
    for part in parts:
        starts.append(pos)
        pos += len(part)
    # Words, cut at the part boundaries too, so an edit can end exactly where a part ends.
    tokens: list[str] = []
    offsets: list[int] = []
    for part, start in zip(parts, starts, strict=True):
        at = start
        for token in _TOKEN.findall(part):
            tokens.append(token)
            offsets.append(at)
            at += len(token)
    theirs = _TOKEN.findall(new)
    out = [""] * len(parts)

    def owner(offset: int) -> int:
        return max(0, bisect.bisect_right(starts, offset) - 1)

    matcher = difflib.SequenceMatcher(None, tokens, theirs, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for k in range(i1, i2):
                out[owner(offsets[k])] += tokens[k]
            continue
        at = offsets[i1] if i1 < len(tokens) else len(joined)
        if i1 == i2 and i1 > 0 and i1 == len(tokens):
            at = offsets[i1 - 1]  # an insertion at the very end belongs to the last part
        out[owner(at)] += "".join(theirs[j1:j2])
    return out
