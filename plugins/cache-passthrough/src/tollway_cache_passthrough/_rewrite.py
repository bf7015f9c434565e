"""Pure body rewrites for Anthropic prompt caching: count, strip and add ``cache_control``.

Where a ``cache_control`` marker (a *breakpoint*) can sit in an Anthropic Messages body:

* top level (``{"cache_control": {...}, ...}``: automatic caching of the whole prompt);
* each tool definition (``tools[i].cache_control``);
* each system block when ``system`` is a block list (``system[i].cache_control``);
* each content block of each message (``messages[i].content[j].cache_control``), and the
  blocks nested in a block's own ``content`` list (``tool_result`` → text/image/search_result,
  ``search_result`` → text).

Nothing else is touched: a tool's ``input_schema`` or a ``tool_use`` block's ``input`` may well
contain a property named ``cache_control``, and that is the client's data, not a marker.

The functions never mutate their argument; they copy the containers on the path to a change
and return ``None`` when there is nothing to change, so a caller can leave the request's bytes
untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "MAX_BREAKPOINTS",
    "count_markers",
    "force_messages",
    "iter_markers",
    "strip_chat",
    "strip_messages",
]

#: Anthropic refuses a request with more than four ``cache_control`` breakpoints.
MAX_BREAKPOINTS = 4

_KEY = "cache_control"
#: Blocks Anthropic does not let carry a breakpoint.
_UNMARKABLE = frozenset({"thinking", "redacted_thinking"})

#: A position in prompt (rendering) order: tools, then system, then messages, then the
#: top-level automatic breakpoint (which lands on the last block).
Position = tuple[int, ...]
_TOOLS, _SYSTEM, _MESSAGES, _TOP = 0, 1, 2, 3


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _nested(block: dict[str, Any], pos: Position) -> Iterator[tuple[Position, Any]]:
    """Markers in a block's nested ``content`` list (recursively, along ``content`` only)."""
    content = block.get("content")
    if isinstance(content, list):
        for k, inner in enumerate(content):
            if isinstance(inner, dict):
                inner_pos = (*pos, k)
                if inner.get(_KEY) is not None:
                    yield inner_pos, inner[_KEY]
                yield from _nested(inner, inner_pos)


def iter_markers(body: dict[str, Any]) -> Iterator[tuple[Position, Any]]:
    """Every non-null ``cache_control`` of a Messages body with its position, in prompt order."""
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get(_KEY) is not None:
                yield (_TOOLS, i), tool[_KEY]
    system = body.get("system")
    if isinstance(system, list):
        for i, block in enumerate(system):
            if isinstance(block, dict) and block.get(_KEY) is not None:
                yield (_SYSTEM, i), block[_KEY]
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                for j, block in enumerate(content):
                    if isinstance(block, dict):
                        if block.get(_KEY) is not None:
                            yield (_MESSAGES, i, j), block[_KEY]
                        yield from _nested(block, (_MESSAGES, i, j))
    if body.get(_KEY) is not None:
        yield (_TOP,), body[_KEY]


def count_markers(body: dict[str, Any]) -> int:
    """How many breakpoints a Messages body carries (what Anthropic counts against its 4)."""
    return sum(1 for _ in iter_markers(body))


# --------------------------------------------------------------------------------------------
# disable: strip
# --------------------------------------------------------------------------------------------


def _strip_block(block: Any) -> Any:
    """``block`` without ``cache_control`` (also in nested ``content``), or itself if clean."""
    if not isinstance(block, dict):
        return block
    out = block
    if _KEY in block:
        out = {k: v for k, v in block.items() if k != _KEY}
    content = block.get("content")
    if isinstance(content, list):
        stripped = _strip_list(content)
        if stripped is not None:
            if out is block:
                out = dict(block)
            out["content"] = stripped
    return out


def _strip_list(blocks: list[Any]) -> list[Any] | None:
    """A copy of ``blocks`` with every marker removed, or ``None`` when there was none."""
    out: list[Any] | None = None
    for i, block in enumerate(blocks):
        new = _strip_block(block)
        if new is not block:
            if out is None:
                out = list(blocks)
            out[i] = new
    return out


def strip_messages(body: dict[str, Any]) -> dict[str, Any] | None:
    """The Messages body without any ``cache_control``; ``None`` when it had none."""
    out: dict[str, Any] | None = None

    def put(key: str, value: Any) -> None:
        nonlocal out
        if out is None:
            out = dict(body)
        out[key] = value

    if _KEY in body:
        out = {k: v for k, v in body.items() if k != _KEY}
    tools = body.get("tools")
    if isinstance(tools, list):
        # Only the tool's own key: its schema is the client's data.
        new_tools: list[Any] | None = None
        for i, tool in enumerate(tools):
            if isinstance(tool, dict) and _KEY in tool:
                if new_tools is None:
                    new_tools = list(tools)
                new_tools[i] = {k: v for k, v in tool.items() if k != _KEY}
        if new_tools is not None:
            put("tools", new_tools)
    system = body.get("system")
    if isinstance(system, list):
        new_system = _strip_list(system)
        if new_system is not None:
            put("system", new_system)
    messages = body.get("messages")
    if isinstance(messages, list):
        new_messages = _strip_messages_list(messages)
        if new_messages is not None:
            put("messages", new_messages)
    return out


def _strip_messages_list(messages: list[Any]) -> list[Any] | None:
    out: list[Any] | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue
        stripped = _strip_list(content)
        if stripped is not None:
            if out is None:
                out = list(messages)
            out[i] = {**message, "content": stripped}
    return out


def strip_chat(body: dict[str, Any]) -> dict[str, Any] | None:
    """An OpenAI chat body without ``cache_control`` on its content parts (which the
    chat → Anthropic translation carries over), tools or top level; ``None`` when it had none."""
    out: dict[str, Any] | None = None
    if _KEY in body:
        out = {k: v for k, v in body.items() if k != _KEY}
    messages = body.get("messages")
    if isinstance(messages, list):
        new_messages: list[Any] | None = None
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            stripped = _strip_list(content) if isinstance(content, list) else None
            if stripped is not None or _KEY in message:
                if new_messages is None:
                    new_messages = list(messages)
                new = {k: v for k, v in message.items() if k != _KEY}
                if stripped is not None:
                    new["content"] = stripped
                new_messages[i] = new
        if new_messages is not None:
            out = out if out is not None else dict(body)
            out["messages"] = new_messages
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and _KEY in t for t in tools):
        out = out if out is not None else dict(body)
        out["tools"] = [
            {k: v for k, v in t.items() if k != _KEY} if isinstance(t, dict) else t for t in tools
        ]
    return out


# --------------------------------------------------------------------------------------------
# force: add
# --------------------------------------------------------------------------------------------


def _markable_text(block: Any) -> bool:
    return (
        isinstance(block, dict)
        and block.get("type") not in _UNMARKABLE
        and not (block.get("type") == "text" and not block.get("text"))
    )


def _system_target(body: dict[str, Any]) -> tuple[Position, bool] | None:
    """(position, already marked) of the last markable system block."""
    system = body.get("system")
    if isinstance(system, str):
        return ((_SYSTEM, 0), False) if system else None
    if isinstance(system, list):
        for i in range(len(system) - 1, -1, -1):
            if _markable_text(system[i]):
                return (_SYSTEM, i), system[i].get(_KEY) is not None
    return None


def _tool_target(body: dict[str, Any]) -> tuple[Position, bool] | None:
    """The last tool that is rendered into the prompt (deferred tools are not)."""
    tools = body.get("tools")
    if isinstance(tools, list):
        for i in range(len(tools) - 1, -1, -1):
            tool = tools[i]
            if isinstance(tool, dict) and tool.get("defer_loading") is not True:
                return (_TOOLS, i), tool.get(_KEY) is not None
    return None


def _message_target(body: dict[str, Any]) -> tuple[Position, bool] | None:
    """The last markable block of the last message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    i = len(messages) - 1
    message = messages[i]
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return ((_MESSAGES, i, 0), False) if content else None
    if isinstance(content, list):
        for j in range(len(content) - 1, -1, -1):
            if _markable_text(content[j]):
                return (_MESSAGES, i, j), content[j].get(_KEY) is not None
    return None


def _is_long(marker: Any) -> bool:
    return isinstance(marker, dict) and marker.get("ttl") == "1h"


def force_messages(body: dict[str, Any], *, one_hour: bool = False) -> dict[str, Any] | None:
    """Add ephemeral breakpoints at the last system block, the last tool and the last message's
    last block; ``None`` when nothing was added.

    Existing markers are kept and counted: additions stop at :data:`MAX_BREAKPOINTS`, taken in
    SPEC order (system, tool, last message). A string ``system`` or message ``content`` becomes
    one text block. With ``one_hour`` an added marker carries ``"ttl": "1h"`` unless a 5-minute
    marker precedes it in prompt order (Anthropic wants longer TTLs first); a marker added
    before an existing 1-hour one gets 1 hour too, for the same reason.
    """
    existing = list(iter_markers(body))
    budget = MAX_BREAKPOINTS - len(existing)
    if budget <= 0:
        return None
    wanted: list[Position] = []
    for target in (_system_target(body), _tool_target(body), _message_target(body)):
        if target is not None and not target[1] and len(wanted) < budget:
            wanted.append(target[0])
    if not wanted:
        return None
    markers: list[tuple[Position, bool]] = [(pos, _is_long(m)) for pos, m in existing]
    out = dict(body)
    for pos in sorted(wanted):
        short_before = any(p < pos and not long for p, long in markers)
        long_after = any(p > pos and long for p, long in markers)
        long = (long_after or one_hour) and not short_before
        markers.append((pos, long))
        marker: dict[str, Any] = (
            {"type": "ephemeral", "ttl": "1h"} if long else {"type": "ephemeral"}
        )
        _apply(out, body, pos, marker)
    return out


def _apply(
    out: dict[str, Any], body: dict[str, Any], pos: Position, marker: dict[str, Any]
) -> None:
    """Set ``marker`` at ``pos`` in ``out`` (a shallow copy of ``body``), copying on the way."""
    section = pos[0]
    if section == _TOOLS:
        tools = out["tools"] = list(out["tools"])
        tools[pos[1]] = {**tools[pos[1]], _KEY: marker}
    elif section == _SYSTEM:
        system = body["system"]
        if isinstance(system, str):
            out["system"] = [{"type": "text", "text": system, _KEY: marker}]
        else:
            blocks = out["system"] = list(out["system"])
            blocks[pos[1]] = {**blocks[pos[1]], _KEY: marker}
    else:
        messages = out["messages"] = list(out["messages"])
        i, j = pos[1], pos[2]
        message = messages[i]
        content = message["content"]
        if isinstance(content, str):
            new_content: list[Any] = [{"type": "text", "text": content, _KEY: marker}]
        else:
            new_content = list(content)
            new_content[j] = {**new_content[j], _KEY: marker}
        messages[i] = {**message, "content": new_content}
