"""The Anthropic wire: Messages (and count_tokens)."""

from __future__ import annotations

from typing import Any

from tollway_simulator.common import (
    GREETING,
    Call,
    JsonReply,
    PrefixHasher,
    Reply,
    StreamReply,
    b62_id,
    chunk_string,
    dumps,
    input_tokens_of,
    prefer_shell_tool,
    reply_words,
    split_words,
    sse_event,
    texts_of,
    tool_arguments,
)
from tollway_simulator.errors import error_reply, provider_headers

MAX_TOKENS_REQUIRED = dumps(
    {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
)
_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_SERVER_TOOL_FREE_TYPES = (None, "custom")


def _bad(message: str) -> JsonReply:
    return error_reply("anthropic", 400, message)


def _strip_cache_control(unit: Any) -> tuple[Any, bool]:
    if isinstance(unit, dict) and "cache_control" in unit:
        return {k: v for k, v in unit.items() if k != "cache_control"}, unit[
            "cache_control"
        ] is not None
    return unit, False


def cache_split(call: Call, req: dict[str, Any], total: int) -> tuple[int, int, int]:
    """Split prompt tokens into (input, cache_creation, cache_read) like Anthropic prompt caching.

    The prompt is hashed in cache order (tools, system, messages) with a snapshot at every
    ``cache_control`` breakpoint. The longest breakpoint prefix seen before is read from the
    cache; the rest up to the last breakpoint is written; what follows is plain input.
    """
    if b'"cache_control"' not in call.body:
        return total, 0, 0
    hasher = PrefixHasher()
    hasher.add(req.get("model"))

    def add(unit: Any) -> None:
        stripped, marked = _strip_cache_control(unit)
        hasher.add(stripped)
        if marked:
            hasher.mark()

    tools = req.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            add(tool)
    system = req.get("system")
    if isinstance(system, list):
        for block in system:
            add(block)
    elif system is not None:
        hasher.add(system)
    messages = req.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            hasher.add(message.get("role"))
            content = message.get("content")
            if isinstance(content, list):
                for block in content:
                    add(block)
            else:
                hasher.add(content)
    if isinstance(req.get("cache_control"), dict):  # top-level (automatic) caching
        hasher.mark()
    if not hasher.digests:
        return total, 0, 0
    tokens = [min(size // 4, total) for size in hasher.sizes]
    hit = call.memory.longest_seen(hasher.digests)
    read = tokens[hit] if hit >= 0 else 0
    cached_end = tokens[-1]
    creation = max(0, cached_end - read)
    call.memory.remember(hasher.digests)
    return max(0, total - cached_end), creation, read


def _pick_tool(req: dict[str, Any], override: str | None) -> dict[str, Any] | None:
    tools = req.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = req.get("tool_choice")
    choice_type = choice.get("type") if isinstance(choice, dict) else None
    if choice_type == "none" or (override is not None and override.lower() == "none"):
        return None
    candidates = [
        t
        for t in tools
        if isinstance(t, dict)
        and isinstance(t.get("name"), str)
        and t.get("type") in _SERVER_TOOL_FREE_TYPES
    ]
    if not candidates:
        return None
    wanted = override
    if not wanted and choice_type == "tool":
        wanted = choice.get("name")  # type: ignore[union-attr]
    if wanted:
        for t in candidates:
            if t["name"] == wanted:
                return t
    return prefer_shell_tool(candidates)


def _last_user(messages: list[Any]) -> tuple[str | None, bool]:
    """(text of the last user message, whether it carries a tool_result)."""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") == "tool_result" for b in content
            ):
                return None, True
            return texts_of(content), False
    return None, False


def count_tokens(call: Call) -> Reply:
    if not isinstance(call.data.get("messages"), list):
        return _bad("messages: Field required")
    return JsonReply(
        200, dumps({"input_tokens": input_tokens_of(call.body)}), provider_headers("anthropic")
    )


def messages(call: Call) -> Reply:
    req = call.data
    if "max_tokens" not in req:
        return JsonReply(400, MAX_TOKENS_REQUIRED, provider_headers("anthropic"))
    max_tokens = req["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return _bad("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        return _bad("max_tokens: Input should be greater than or equal to 1")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        return _bad("model: Field required")
    msgs = req.get("messages")
    if not isinstance(msgs, list):
        return _bad("messages: Field required")
    stream = req.get("stream") is True

    total = input_tokens_of(call.body)
    input_tokens, creation, read = cache_split(call, req, total)
    user_text, after_tool = _last_user(msgs)
    tool = None if after_tool else _pick_tool(req, call.tool_override)

    message_id = b62_id("msg_01", 22)
    blocks: list[dict[str, Any]] = []
    if tool is not None:
        words = split_words(f"{GREETING} Calling the {tool['name']} tool.")
        tool_input = tool_arguments(tool["name"], tool.get("input_schema"))
        tool_json = dumps(tool_input).decode()
        tool_block = {
            "type": "tool_use",
            "id": b62_id("toolu_01", 22),
            "name": tool["name"],
            "input": tool_input,
        }
        stop_reason = "tool_use"
        output_tokens = len(words) + max(1, len(tool_json) // 4) + 8
    else:
        words = reply_words(
            user_text,
            after_tool=after_tool,
            output_words=call.output_words,
            chunk_chars=call.chunk_chars,
        )
        stop_reason = "end_turn"
        if max_tokens < len(words):
            words = words[:max_tokens]
            stop_reason = "max_tokens"
        output_tokens = len(words)
    text = "".join(words)
    blocks.append({"type": "text", "text": text})
    if tool is not None:
        blocks.append(tool_block)

    cache_creation = {"ephemeral_5m_input_tokens": creation, "ephemeral_1h_input_tokens": 0}

    if not stream:
        body = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": creation,
                "cache_read_input_tokens": read,
                "cache_creation": cache_creation,
                "output_tokens": output_tokens,
                "service_tier": "standard",
            },
        }
        return JsonReply(200, dumps(body), provider_headers("anthropic"))

    events = [
        sse_event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": input_tokens,
                        "cache_creation_input_tokens": creation,
                        "cache_read_input_tokens": read,
                        "cache_creation": cache_creation,
                        "output_tokens": 1,
                        "service_tier": "standard",
                    },
                },
            },
        ),
        sse_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _PING,
    ]
    for word in words:
        events.append(
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word},
                },
            )
        )
    events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if tool is not None:
        events.append(
            sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {**tool_block, "input": {}},
                },
            )
        )
        for piece in ["", *chunk_string(tool_json)]:
            events.append(
                sse_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            )
        events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": 1}))
    events.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": creation,
                    "cache_read_input_tokens": read,
                    "output_tokens": output_tokens,
                },
            },
        )
    )
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    malformed = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":\n\n'
    )
    return StreamReply(events, provider_headers("anthropic"), malformed)
