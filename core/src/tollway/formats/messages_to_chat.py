"""Anthropic Messages request → OpenAI chat request (:func:`messages_request_to_chat`)."""

from __future__ import annotations

from collections.abc import (
    Mapping,
)
from typing import Any

from tollway._errors import BadRequest
from tollway._input import quote_input
from tollway.formats.helpers import DroppedParams, _dumps_str, require_object
from tollway.formats.shapes import Sampling, Translated

__all__ = [
    "MAX_CHAT_STOP",
    "MAX_CHAT_USER",
    "messages_request_to_chat",
]


_MESSAGES_HANDLED = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "metadata",
    }
)
#: OpenAI's Chat Completions API takes at most this many stop sequences.
MAX_CHAT_STOP = 4
#: Longest ``metadata.user_id`` forwarded as OpenAI's ``user``.
MAX_CHAT_USER = 64


def messages_request_to_chat(
    body: Mapping[str, Any],
    *,
    model: str,
    max_tokens_field: str = "max_completion_tokens",
    sampling: Sampling = "all",
    allow_stop: bool = True,
) -> Translated:
    """An Anthropic Messages request as an OpenAI chat request for ``model``.

    ``system`` becomes system messages, content blocks become content parts, ``tool_use`` /
    ``tool_result`` blocks become ``tool_calls`` / ``tool`` messages, ``max_tokens`` is sent as
    ``max_tokens_field`` and ``stop_sequences`` as ``stop`` (unless ``allow_stop`` is false, as
    for reasoning models). Streams ask for ``stream_options.include_usage`` so the final
    ``message_delta`` can carry usage. ``thinking``, ``cache_control``, ``top_k`` and everything
    else OpenAI has no place for are dropped and reported.
    """
    dropped = DroppedParams()
    for key, value in body.items():
        if key in _MESSAGES_HANDLED or value is None:
            continue
        if key == "thinking" and isinstance(value, dict) and value.get("type") == "disabled":
            continue
        dropped.add(key)

    out: dict[str, Any] = {"model": model}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        if system:
            messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        for j, raw in enumerate(system):
            block = require_object(raw, f"system[{j}]")
            if block.get("cache_control") is not None:
                dropped.add("cache_control")
            text = block.get("text")
            if block.get("type") == "text" and isinstance(text, str):
                if text:
                    messages.append({"role": "system", "content": text})
            else:
                dropped.add(f"system.{block.get('type')}")
    elif system is not None:
        raise BadRequest("'system' must be a string or an array of text blocks", param="system")

    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise BadRequest("'messages' must be an array", param="messages")
    for i, raw in enumerate(raw_messages):
        messages.extend(_anthropic_message_to_chat(raw, f"messages[{i}]", dropped))
    out["messages"] = messages

    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        out[max_tokens_field] = max_tokens

    tools = body.get("tools")
    chat_tools: list[dict[str, Any]] = []
    if isinstance(tools, list):
        chat_tools = _anthropic_tools_to_chat(tools, dropped)
        if chat_tools:
            out["tools"] = chat_tools
    elif tools is not None:
        raise BadRequest("'tools' must be an array", param="tools")
    if chat_tools:
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind == "auto":
                out["tool_choice"] = "auto"
            elif kind == "any":
                out["tool_choice"] = "required"
            elif kind == "none":
                out["tool_choice"] = "none"
            elif kind == "tool" and isinstance(choice.get("name"), str):
                out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
            else:
                dropped.add("tool_choice")
            if choice.get("disable_parallel_tool_use") is True and kind != "none":
                out["parallel_tool_calls"] = False
        elif choice is not None:
            dropped.add("tool_choice")

    stop = body.get("stop_sequences")
    if isinstance(stop, list) and stop:
        if not allow_stop:
            dropped.add("stop_sequences")
        else:
            if len(stop) > MAX_CHAT_STOP:
                dropped.add("stop_sequences")
            out["stop"] = stop[:MAX_CHAT_STOP]

    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is None:
            continue
        if sampling == "none" or (sampling == "one" and name == "top_p" and "temperature" in out):
            dropped.add(name)
        else:
            out[name] = value

    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        user_id = metadata.get("user_id")
        if isinstance(user_id, str) and 0 < len(user_id) <= MAX_CHAT_USER:
            out["user"] = user_id
        elif user_id is not None:
            dropped.add("metadata.user_id")
        if any(k != "user_id" for k in metadata):
            dropped.add("metadata")

    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return Translated(out, dropped.result())


def _anthropic_source_to_url(source: Any, where: str) -> str | None:
    if not isinstance(source, dict):
        raise BadRequest(f"{where}.source must be an object", param=where)
    kind = source.get("type")
    if kind == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if kind == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    return None


def _anthropic_message_to_chat(
    raw: Any, where: str, dropped: DroppedParams
) -> list[dict[str, Any]]:
    message = require_object(raw, where)
    role = message.get("role")
    content = message.get("content")
    if role == "system":  # Claude Code sends one inside messages
        texts = _blocks_text(content, where, dropped)
        return [{"role": "system", "content": t} for t in texts if t]
    if role not in ("user", "assistant"):
        raise BadRequest(f"{where}.role {quote_input(role)} is not a messages role", param=where)
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or an array of blocks", param=where)
    if role == "assistant":
        return _anthropic_assistant_to_chat(content, where, dropped)

    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, raw_block in enumerate(content):
        block_where = f"{where}.content[{j}]"
        block = require_object(raw_block, block_where)
        if block.get("cache_control") is not None:
            dropped.add("cache_control")
        kind = block.get("type")
        if kind == "tool_result":
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str):
                raise BadRequest(f"{block_where}.tool_use_id is required", param=block_where)
            if block.get("is_error"):
                dropped.add("tool_result.is_error")
            result = block.get("content")
            tool_content: Any = ""
            if isinstance(result, str):
                tool_content = result
            elif isinstance(result, list):
                text_parts: list[dict[str, Any]] = []
                for k, raw_inner in enumerate(result):
                    inner = require_object(raw_inner, f"{block_where}.content[{k}]")
                    if inner.get("cache_control") is not None:
                        dropped.add("cache_control")
                    if inner.get("type") == "text" and isinstance(inner.get("text"), str):
                        text_parts.append({"type": "text", "text": inner["text"]})
                    else:
                        # OpenAI tool messages carry text only: images follow as a user turn.
                        part = _anthropic_block_to_part(
                            inner, f"{block_where}.content[{k}]", dropped
                        )
                        if part is not None:
                            parts.append(part)
                tool_content = text_parts
            tool_messages.append({"role": "tool", "tool_call_id": call_id, "content": tool_content})
            continue
        part = _anthropic_block_to_part(block, block_where, dropped)
        if part is not None:
            parts.append(part)
    out = tool_messages
    if parts:
        out.append({"role": "user", "content": parts})
    elif not tool_messages:
        out.append({"role": "user", "content": []})
    return out


def _anthropic_block_to_part(
    block: dict[str, Any], where: str, dropped: DroppedParams
) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{where}.text must be a string", param=where)
        return {"type": "text", "text": text}
    if kind == "image":
        url = _anthropic_source_to_url(block.get("source"), where)
        if url is None:
            dropped.add("image.source")
            return None
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            return {"type": "text", "text": str(source.get("data") or "")}
        if (
            isinstance(source, dict)
            and source.get("type") == "base64"
            and source.get("media_type") == "application/pdf"
        ):
            return {
                "type": "file",
                "file": {
                    "filename": str(block.get("title") or "document.pdf"),
                    "file_data": f"data:application/pdf;base64,{source.get('data')}",
                },
            }
        dropped.add("document.source")
        return None
    dropped.add(f"content.{kind}")
    return None


def _blocks_text(content: Any, where: str, dropped: DroppedParams) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or an array of blocks", param=where)
    texts = []
    for j, raw in enumerate(content):
        block = require_object(raw, f"{where}.content[{j}]")
        if block.get("cache_control") is not None:
            dropped.add("cache_control")
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        else:
            dropped.add(f"content.{block.get('type')}")
    return texts


def _anthropic_assistant_to_chat(
    content: list[Any], where: str, dropped: DroppedParams
) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, raw in enumerate(content):
        block_where = f"{where}.content[{j}]"
        block = require_object(raw, block_where)
        if block.get("cache_control") is not None:
            dropped.add("cache_control")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise BadRequest(f"{block_where} needs an id and a name", param=block_where)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": _dumps_str(block.get("input", {}))},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            dropped.add("thinking")
        else:
            dropped.add(f"content.{kind}")
    text = "".join(texts)
    if not text and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _anthropic_tools_to_chat(tools: list[Any], dropped: DroppedParams) -> list[dict[str, Any]]:
    out = []
    for j, raw in enumerate(tools):
        where = f"tools[{j}]"
        tool = require_object(raw, where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            dropped.add(f"tools.{kind}")  # a server tool (web_search_…, bash_…): Anthropic only
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}.name is required", param=where)
        function: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        schema = tool.get("input_schema")
        function["parameters"] = (
            schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        )
        for extra in tool:
            if extra not in ("name", "description", "input_schema", "type"):
                dropped.add("cache_control" if extra == "cache_control" else f"tools.{extra}")
        out.append({"type": "function", "function": function})
    return out
