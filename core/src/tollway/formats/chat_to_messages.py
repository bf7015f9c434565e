"""OpenAI chat request → Anthropic Messages request (:func:`chat_request_to_messages`)."""

from __future__ import annotations

from collections.abc import (
    Mapping,
)
from typing import Any

from tollway._errors import BadRequest
from tollway.formats.helpers import (
    CHAT_COMMON_PARAMS,
    DroppedParams,
    assistant_tool_calls,
    chat_messages,
    content_parts,
    dropped_chat_params,
    file_part_data,
    image_part_url,
    parse_data_url,
    part_text,
    text_of_parts,
    tool_call_arguments,
    tool_functions,
)
from tollway.formats.shapes import Sampling, Translated

__all__ = [
    "chat_request_to_messages",
]


_CHAT_HANDLED = CHAT_COMMON_PARAMS | {"top_k", "parallel_tool_calls", "user"}


def chat_request_to_messages(
    body: Mapping[str, Any],
    *,
    model: str,
    sampling: Sampling = "all",
    default_max_tokens: int | None = None,
) -> Translated:
    """An OpenAI chat request as an Anthropic Messages request for ``model``.

    ``system``/``developer`` messages become ``system`` blocks; user, assistant and tool messages
    become content blocks (consecutive tool results merge into one user message); images become
    image blocks; tools, ``tool_choice`` and ``parallel_tool_calls`` map to their Anthropic
    forms. ``max_completion_tokens`` (else ``max_tokens``, else ``default_max_tokens``) becomes
    ``max_tokens``; none of them → :class:`~tollway.BadRequest` naming ``max_tokens``.
    """
    dropped = dropped_chat_params(body, _CHAT_HANDLED)
    out: dict[str, Any] = {"model": model}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = default_max_tokens
    if max_tokens is None:
        raise BadRequest(
            f"model {model!r} is served by an Anthropic provider, which requires max_tokens: "
            "set max_tokens (or max_completion_tokens) in the request",
            param="max_tokens",
        )
    out["max_tokens"] = max_tokens

    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be an array", param="messages")
    system, converted = _chat_messages_to_anthropic(messages, dropped)
    if system:
        out["system"] = system
    out["messages"] = converted

    tools = body.get("tools")
    anthropic_tools: list[dict[str, Any]] = []
    if isinstance(tools, list):
        anthropic_tools = _chat_tools_to_anthropic(tools, dropped)
        if anthropic_tools:
            out["tools"] = anthropic_tools
    elif tools is not None:
        raise BadRequest("'tools' must be an array", param="tools")
    if anthropic_tools:
        choice = _chat_tool_choice_to_anthropic(body.get("tool_choice"), dropped)
        if body.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice is not None:
            out["tool_choice"] = choice

    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop

    temperature, top_p, top_k = body.get("temperature"), body.get("top_p"), body.get("top_k")
    if sampling == "none":
        for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k)):
            if value is not None:
                dropped.add(name)
        temperature = top_p = top_k = None
    elif sampling == "one" and temperature is not None and top_p is not None:
        dropped.add("top_p")
        top_p = None
    if temperature is not None:
        out["temperature"] = temperature
    if top_p is not None:
        out["top_p"] = top_p
    if top_k is not None:
        out["top_k"] = top_k

    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("stream") is True:
        out["stream"] = True
    return Translated(out, dropped.result())


def _chat_messages_to_anthropic(
    messages: list[Any], dropped: DroppedParams
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    tool_results: list[dict[str, Any]] | None = None  # the open merged tool-result message
    for where, role, message in chat_messages(messages, dropped):
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(
                {"type": "text", "text": text}
                for text in text_of_parts(content, f"{where}.content")
                if text
            )
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": _tool_content_to_anthropic(content, f"{where}.content"),
            }
            if tool_results is None:
                tool_results = [block]
                out.append({"role": "user", "content": tool_results})
            else:
                tool_results.append(block)
            continue
        tool_results = None
        if role == "user":
            out.append(
                {"role": "user", "content": _user_content_to_anthropic(content, where, dropped)}
            )
        elif role == "assistant":
            blocks = _assistant_to_anthropic(message, where)
            if blocks is not None:
                out.append({"role": "assistant", "content": blocks})
        else:  # function
            raise BadRequest(
                f"{where}: legacy 'function' messages cannot be translated for this provider; "
                "use tools and 'tool' messages",
                param=where,
            )
    return system, out


def _tool_content_to_anthropic(content: Any, where: str) -> Any:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": t} for t in text_of_parts(content, where) if t]


def _user_content_to_anthropic(content: Any, where: str, dropped: DroppedParams) -> Any:
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for part_where, part, kind in content_parts(content, where):
        block: dict[str, Any] | None = None
        if kind == "text":
            text = part_text(part, part_where)
            if text:
                block = {"type": "text", "text": text}
        elif kind == "image_url":
            url = image_part_url(part, part_where, dropped)
            parsed = parse_data_url(url, f"{part_where}.image_url.url")
            if parsed is not None:
                source = {"type": "base64", "media_type": parsed[0], "data": parsed[1]}
            else:
                source = {"type": "url", "url": url}
            block = {"type": "image", "source": source}
        elif kind == "file":
            parsed = file_part_data(part, part_where)
            if parsed is not None and parsed[0] == "application/pdf":
                block = {
                    "type": "document",
                    "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]},
                }
            else:
                dropped.add("content.file")
        else:
            dropped.add(f"content.{kind}")
        if block is not None:
            if part.get("cache_control") is not None:
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
    return blocks


def _assistant_to_anthropic(message: dict[str, Any], where: str) -> Any:
    """Assistant content blocks, or None for a message with nothing in it."""
    content = message.get("content")
    tool_calls = message.get("tool_calls")
    if isinstance(content, str) and not tool_calls:
        return content or None
    blocks: list[dict[str, Any]] = [
        {"type": "text", "text": t} for t in text_of_parts(content, f"{where}.content") if t
    ]
    if isinstance(message.get("refusal"), str) and message["refusal"] and not blocks:
        blocks.append({"type": "text", "text": message["refusal"]})
    for call_where, call, function in assistant_tool_calls(message, where):
        name, call_id = function.get("name"), call.get("id")
        if not isinstance(name, str) or not isinstance(call_id, str):
            raise BadRequest(f"{call_where} needs an id and function.name", param=call_where)
        tool_input = tool_call_arguments(function.get("arguments"), call_where)
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": tool_input})
    return blocks or None


def _chat_tools_to_anthropic(tools: list[Any], dropped: DroppedParams) -> list[dict[str, Any]]:
    out = []
    for function in tool_functions(tools, dropped):
        schema = function.get("parameters")
        if not isinstance(schema, dict):
            schema = {"type": "object", "properties": {}}
        elif "type" not in schema:
            schema = {"type": "object", **schema}
        converted: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            converted["description"] = function["description"]
        converted["input_schema"] = schema
        if function.get("strict"):
            dropped.add("tools.function.strict")
        out.append(converted)
    return out


def _chat_tool_choice_to_anthropic(choice: Any, dropped: DroppedParams) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    dropped.add("tool_choice")
    return None
