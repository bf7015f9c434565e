"""Shared helpers: ids, SSE framing, deterministic text, schema examples, prefix-cache memory."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

GREETING = "Hello from the Tollway simulator."
AFTER_TOOL = "Received the tool result."
ECHO_WORDS = 8
ECHO_CHARS = 60
MAX_OUTPUT_WORDS = 100_000
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_WORD_RE = re.compile(r"\s*\S+")

JSON_CT = "application/json"
SSE_CT = "text/event-stream"


# --------------------------------------------------------------------------- replies


@dataclass(slots=True)
class JsonReply:
    """A complete (non-streaming) response."""

    status: int
    body: bytes
    headers: dict[str, str]
    content_type: str = JSON_CT


@dataclass(slots=True)
class StreamReply:
    """An SSE response: one bytes object per event, each ending with a blank line."""

    events: list[bytes]
    headers: dict[str, str]
    # The event inserted in the middle by the ``malformed-sse`` fault.
    malformed: bytes = b"data: {\n\n"
    #: ``text/event-stream``, or another framing (Bedrock's ``application/vnd.amazon.eventstream``).
    content_type: str = SSE_CT


Reply = JsonReply | StreamReply


@dataclass(slots=True)
class Call:
    """One provider request as the wire builders see it."""

    body: bytes
    data: dict[str, Any]
    headers: Mapping[str, str]
    memory: PrefixMemory
    output_words: int | None = None
    tool_override: str | None = None
    #: ``x-simulator-chunk-chars``: cut the answer into deltas of this many characters.
    chunk_chars: int | None = None


# --------------------------------------------------------------------------- ids and framing


def hex_id(prefix: str, nbytes: int = 12) -> str:
    """A random id such as ``chatcmpl-3f…``."""
    return prefix + os.urandom(nbytes).hex()


def b62_id(prefix: str, length: int = 24) -> str:
    """A random base62 id such as Anthropic's ``msg_01…`` / ``toolu_01…``."""
    raw = os.urandom(length)
    return prefix + "".join(_B62[b % 62] for b in raw)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def sse_data(obj: Any) -> bytes:
    """A ``data:``-only SSE event (OpenAI chat style)."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(name: str, obj: Any) -> bytes:
    """A named SSE event (Anthropic and Responses API style)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


# --------------------------------------------------------------------------- text


def split_words(text: str) -> list[str]:
    """Split into chunks of one word each, keeping the leading whitespace with the word."""
    return _WORD_RE.findall(text)


def echo_of(user_text: str | None) -> str:
    if not user_text:
        return ""
    echo = " ".join(user_text.split()[:ECHO_WORDS])
    if len(echo) > ECHO_CHARS:
        echo = echo[:ECHO_CHARS].rstrip() + "..."
    return echo


def reply_words(
    user_text: str | None,
    *,
    after_tool: bool = False,
    output_words: int | None = None,
    chunk_chars: int | None = None,
) -> list[str]:
    """The deterministic answer for a request, already split into stream chunks."""
    if after_tool:
        text = f"{GREETING} {AFTER_TOOL}"
    else:
        echo = echo_of(user_text)
        text = f"{GREETING} You said: {echo}" if echo else GREETING
    words = split_words(text)
    if output_words is not None:
        n = max(1, min(output_words, MAX_OUTPUT_WORDS))
        if n <= len(words):
            words = words[:n]
        else:
            words.extend(" " + _FILLER[i % len(_FILLER)] for i in range(n - len(words)))
    if chunk_chars is not None and chunk_chars > 0:
        text = "".join(words)
        words = [text[k : k + chunk_chars] for k in range(0, len(text), chunk_chars)]
    return words


def texts_of(content: Any, kinds: tuple[str, ...] = ("text",)) -> str | None:
    """The text of a message ``content`` (string, or list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") in kinds and isinstance(p.get("text"), str)
        ]
        return " ".join(parts) if parts else None
    return None


def chunk_string(s: str, size: int = 12) -> list[str]:
    """Split a string into pieces (for argument deltas)."""
    if not s:
        return [""]
    return [s[i : i + size] for i in range(0, len(s), size)]


def input_tokens_of(body: bytes) -> int:
    """Prompt tokens, approximated as body bytes / 4."""
    return max(1, len(body) // 4)


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


# --------------------------------------------------------------------------- JSON schema


def example_for_schema(schema: Any, depth: int = 0) -> Any:
    """A value valid for simple JSON schemas: string → "example", number → 1, boolean → true…

    Objects get their ``required`` properties only; arrays one element.
    """
    if not isinstance(schema, dict) or depth > 8:
        return "example"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next(
                (o for o in options if isinstance(o, dict) and o.get("type") != "null"),
                options[0],
            )
            return example_for_schema(chosen, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema:
            kind = "array"
        else:
            kind = "string"
    if kind == "string":
        return "example"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        items = schema.get("items")
        return [example_for_schema(items, depth + 1)] if isinstance(items, dict) else []
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        out: dict[str, Any] = {}
        if isinstance(required, list):
            for name in required:
                if isinstance(name, str):
                    out[name] = example_for_schema(props.get(name), depth + 1)
        return out
    return "example"


def example_arguments(schema: Any) -> dict[str, Any]:
    value = example_for_schema(schema if isinstance(schema, dict) else {"type": "object"})
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- coding agents

#: The tools coding agents run commands with: Claude Code's ``Bash``, Codex's ``exec_command``
#: (function), ``shell`` (older function) and ``exec`` (a custom tool taking JavaScript). When a
#: request offers one, the simulator calls it (rather than the first tool, which for Claude Code
#: is ``Agent`` and would spawn sub-agents) with a harmless command, so a real agent completes
#: a tool turn: run it, send the result back, get a text answer.
SHELL_TOOLS = ("Bash", "exec_command", "shell", "exec")
HARMLESS_COMMAND = "echo ok"
#: The input for Codex's ``exec`` custom tool, which evaluates JavaScript.
HARMLESS_JS = 'text("ok")'


def prefer_shell_tool(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The first tool named like a coding agent's shell tool, else the first tool."""
    for tool in tools:
        if tool.get("name") in SHELL_TOOLS:
            return tool
    return tools[0]


def tool_arguments(name: str, schema: Any) -> dict[str, Any]:
    """Arguments for a function tool: schema examples; a shell tool's ``command`` / ``cmd``
    is :data:`HARMLESS_COMMAND` (an argv list when the schema wants an array)."""
    args = example_arguments(schema)
    if name not in SHELL_TOOLS or not isinstance(schema, dict):
        return args
    props = schema.get("properties")
    if not isinstance(props, dict):
        return args
    for key in ("command", "cmd"):
        prop = props.get(key)
        if isinstance(prop, dict):
            argv = prop.get("type") == "array"
            args[key] = ["bash", "-lc", HARMLESS_COMMAND] if argv else HARMLESS_COMMAND
            break
    return args


def custom_tool_input(name: str) -> str:
    """The freeform input of a ``custom`` tool call."""
    return HARMLESS_JS if name == "exec" else "example"


# --------------------------------------------------------------------------- prefix caches


@dataclass(slots=True)
class PrefixMemory:
    """Hashes of prompt prefixes seen so far (bounded, oldest evicted first)."""

    max_entries: int = 200_000
    _seen: dict[bytes, None] = field(default_factory=dict)

    def longest_seen(self, digests: list[bytes]) -> int:
        for i in range(len(digests) - 1, -1, -1):
            if digests[i] in self._seen:
                return i
        return -1

    def remember(self, digests: Iterable[bytes]) -> None:
        seen = self._seen
        for d in digests:
            seen[d] = None
        while len(seen) > self.max_entries:
            del seen[next(iter(seen))]

    def clear(self) -> None:
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._seen)


class PrefixHasher:
    """Running hash over prompt units; ``mark()`` snapshots (digest, cumulative bytes)."""

    __slots__ = ("_h", "digests", "sizes", "total")

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)
        self.total = 0
        self.digests: list[bytes] = []
        self.sizes: list[int] = []

    def add(self, unit: Any) -> None:
        data = orjson.dumps(unit)
        self._h.update(data)
        self._h.update(b"\x1e")
        self.total += len(data)

    def mark(self) -> None:
        self.digests.append(self._h.copy().digest())
        self.sizes.append(self.total)
