"""The client wire formats, as the suites see them: request bodies, text, usage, SSE frames.

``fmt`` is a client endpoint name: ``"chat"`` (OpenAI ``/v1/chat/completions``), ``"messages"``
(Anthropic ``/v1/messages``) or ``"responses"`` (OpenAI ``/v1/responses``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = [
    "FORMATS",
    "PATHS",
    "Event",
    "auth_headers",
    "body_text",
    "body_usage",
    "frame_problems",
    "parse_sse",
    "request_body",
    "stream_text",
    "stream_usage",
]

#: The text formats the suites know, in the order they are tested.
FORMATS = ("chat", "messages", "responses")

PATHS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
}


def auth_headers(fmt: str, key: str) -> dict[str, str]:
    """How the official SDK of ``fmt`` sends the key."""
    if fmt == "messages":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return {"authorization": f"Bearer {key}"}


def request_body(
    fmt: str, model: str, text: str, *, stream: bool = False, max_tokens: int = 256
) -> dict[str, Any]:
    """A one-message request in ``fmt``."""
    if fmt == "chat":
        return {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_completion_tokens": max_tokens,
            "stream": stream,
        }
    if fmt == "messages":
        return {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }
    if fmt == "responses":
        return {"model": model, "input": text, "max_output_tokens": max_tokens, "stream": stream}
    raise ValueError(f"unknown client format {fmt!r}")


# --------------------------------------------------------------------------------------------
# Complete bodies
# --------------------------------------------------------------------------------------------


def body_text(fmt: str, doc: dict[str, Any]) -> str:
    """The assistant text of a complete response."""
    if fmt == "chat":
        choices = doc.get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content") or "")
    if fmt == "messages":
        return "".join(
            b.get("text", "") for b in doc.get("content") or () if b.get("type") == "text"
        )
    if fmt == "responses":
        out = []
        for item in doc.get("output") or ():
            if item.get("type") == "message":
                for part in item.get("content") or ():
                    if part.get("type") == "output_text":
                        out.append(part.get("text", ""))
        return "".join(out)
    raise ValueError(fmt)


def body_usage(fmt: str, doc: dict[str, Any]) -> tuple[int, int] | None:
    """(input, output) tokens the client sees in a complete response, if any."""
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        return None
    if fmt == "chat":
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Event:
    """One server-sent event: its ``event:`` name (``None`` without one) and its data."""

    name: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(raw: bytes | str) -> list[Event]:
    """Split an SSE body into events (comments and empty events dropped)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    events = []
    for block in text.split("\n\n"):
        name = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if name is not None or data:
            events.append(Event(name, "\n".join(data)))
    return events


def _json_events(events: Iterable[Event]) -> list[tuple[Event, Any]]:
    out = []
    for ev in events:
        if ev.data == "[DONE]":
            continue
        try:
            out.append((ev, json.loads(ev.data)))
        except ValueError:
            continue
    return out


def stream_text(fmt: str, events: list[Event]) -> str:
    """The assistant text a stream carried (its text deltas, joined)."""
    out = []
    for _, doc in _json_events(events):
        if not isinstance(doc, dict):
            continue
        if fmt == "chat":
            for choice in doc.get("choices") or ():
                out.append((choice.get("delta") or {}).get("content") or "")
        elif fmt == "messages":
            delta = doc.get("delta") or {}
            if doc.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
                out.append(delta.get("text", ""))
        elif fmt == "responses" and doc.get("type") == "response.output_text.delta":
            out.append(doc.get("delta", ""))
    return "".join(out)


def stream_usage(fmt: str, events: list[Event]) -> tuple[int, int] | None:
    """(input, output) tokens the client sees in a stream, if any."""
    found: tuple[int, int] | None = None
    for _, doc in _json_events(events):
        if not isinstance(doc, dict):
            continue
        if fmt == "chat" and isinstance(doc.get("usage"), dict):
            u = doc["usage"]
            found = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        elif fmt == "messages":
            if doc.get("type") == "message_start":
                u = (doc.get("message") or {}).get("usage") or {}
                found = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
            elif doc.get("type") == "message_delta" and isinstance(doc.get("usage"), dict):
                u = doc["usage"]
                before = found or (0, 0)
                found = (
                    int(u.get("input_tokens") or before[0]),
                    int(u.get("output_tokens") or 0),
                )
        elif fmt == "responses" and doc.get("type") == "response.completed":
            u = (doc.get("response") or {}).get("usage")
            if isinstance(u, dict):
                found = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
    return found


def frame_problems(fmt: str, events: list[Event]) -> list[str]:
    """What is wrong with a complete, successful stream's framing, one line each."""
    if not events:
        return ["the stream carried no event at all"]
    if fmt == "chat":
        return _chat_frames(events)
    if fmt == "messages":
        return _messages_frames(events)
    if fmt == "responses":
        return _responses_frames(events)
    raise ValueError(fmt)


def _chat_frames(events: list[Event]) -> list[str]:
    problems = []
    named = [ev.name for ev in events if ev.name is not None]
    if named:
        problems.append(f"OpenAI chat streams carry data-only events, found event: {named[:3]}")
    if events[-1].data != "[DONE]":
        problems.append(
            f"the last event must be `data: [DONE]` (the openai SDK waits for it), got "
            f"{events[-1].data[:80]!r}"
        )
    if sum(1 for ev in events if ev.data == "[DONE]") > 1:
        problems.append("`data: [DONE]` appears more than once")
    docs = _json_events(events)
    if len(docs) != len([ev for ev in events if ev.data != "[DONE]"]):
        problems.append("some events' data is not JSON")
    finishes = 0
    for i, (_, doc) in enumerate(docs):
        if doc.get("object") != "chat.completion.chunk":
            problems.append(
                f"chunk {i}: object is {doc.get('object')!r}, not chat.completion.chunk"
            )
            break
        for choice in doc.get("choices") or ():
            if choice.get("finish_reason"):
                finishes += 1
    if docs:
        first = docs[0][1].get("choices") or [{}]
        if (first[0].get("delta") or {}).get("role") != "assistant":
            problems.append('the first chunk\'s delta must carry "role": "assistant"')
    if finishes != 1:
        problems.append(f"exactly one chunk must carry a finish_reason, found {finishes}")
    return problems


def _messages_frames(events: list[Event]) -> list[str]:
    problems = []
    docs = []
    for i, ev in enumerate(events):
        try:
            doc = ev.json()
        except ValueError:
            problems.append(f"event {i} ({ev.name}): data is not JSON: {ev.data[:80]!r}")
            continue
        if ev.name is None:
            problems.append(
                f"event {i} ({doc.get('type')}) has no `event:` line; the anthropic SDK "
                "silently drops such events"
            )
        elif ev.name != doc.get("type"):
            problems.append(f"event {i}: `event: {ev.name}` but data type {doc.get('type')!r}")
        docs.append(doc)
    types = [d.get("type") for d in docs]
    if not types or types[0] != "message_start":
        problems.append(f"the first event must be message_start, got {types[:1]}")
    if not types or types[-1] != "message_stop":
        problems.append(f"the last event must be message_stop, got {types[-1:]}")
    if "message_delta" not in types:
        problems.append("no message_delta event (it carries stop_reason and output usage)")
    elif types.index("message_delta") > (len(types) - 2):
        problems.append("message_delta must come just before message_stop")
    open_blocks: set[int] = set()
    for d in docs:
        kind = d.get("type")
        index = d.get("index")
        if kind == "content_block_start":
            open_blocks.add(index)
        elif kind == "content_block_delta" and index not in open_blocks:
            problems.append(f"content_block_delta for block {index}, which is not open")
        elif kind == "content_block_stop":
            if index not in open_blocks:
                problems.append(f"content_block_stop for block {index}, which is not open")
            open_blocks.discard(index)
        elif kind == "message_delta" and open_blocks:
            problems.append(f"message_delta while blocks {sorted(open_blocks)} are still open")
    return problems


def _responses_frames(events: list[Event]) -> list[str]:
    problems = []
    docs = []
    for i, ev in enumerate(events):
        try:
            doc = ev.json()
        except ValueError:
            problems.append(f"event {i}: data is not JSON: {ev.data[:80]!r}")
            continue
        if ev.name is not None and ev.name != doc.get("type"):
            problems.append(f"event {i}: `event: {ev.name}` but data type {doc.get('type')!r}")
        docs.append(doc)
    types = [d.get("type") for d in docs]
    if not types or types[0] != "response.created":
        problems.append(f"the first event must be response.created, got {types[:1]}")
    if not types or types[-1] != "response.completed":
        problems.append(f"the last event must be response.completed, got {types[-1:]}")
    numbers = [d.get("sequence_number") for d in docs if "sequence_number" in d]
    if numbers and numbers != sorted(numbers):
        problems.append("sequence_number must increase")
    return problems
