"""Complete responses, both directions: :func:`messages_response_to_chat`,
:func:`chat_response_to_messages`."""

from __future__ import annotations

import time
from collections.abc import (
    Mapping,
)
from typing import Any

from tollway._errors import BadRequest
from tollway._types import Usage
from tollway.formats.helpers import _dumps_str, _obj, tool_call_arguments
from tollway.formats.shapes import (
    chat_usage,
    finish_reason_from_stop,
    messages_usage,
    stop_reason_from_finish,
    usage_to_chat,
    usage_to_messages,
)

__all__ = [
    "chat_response_to_messages",
    "messages_response_to_chat",
]


def messages_response_to_chat(
    doc: Mapping[str, Any], *, created: int | None = None
) -> dict[str, Any]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion``."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = doc.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": _dumps_str(block.get("input", {})),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    message["refusal"] = None
    usage = doc.get("usage")
    out: dict[str, Any] = {
        "id": doc.get("id"),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": doc.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason_from_stop(doc.get("stop_reason")),
            }
        ],
    }
    if isinstance(usage, dict):
        out["usage"] = usage_to_chat(messages_usage(usage))
    return out


def _tool_input(arguments: Any) -> dict[str, Any]:
    """Leniently: the arguments' JSON object, else ``{}`` (an upstream answer is not refused)."""
    try:
        return tool_call_arguments(arguments, "tool_call")
    except BadRequest:
        return {}


def chat_response_to_messages(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic ``message`` (the first choice)."""
    choices = doc.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    blocks: list[dict[str, Any]] = []
    refused = False
    content = message.get("content")
    if isinstance(content, str) and content:
        blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if text:
            blocks.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        refused = True
        blocks.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        function = _obj(call.get("function"))
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _tool_input(function.get("arguments")),
            }
        )
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    stop = _stop_for(finish, refused, bool(calls))
    usage = doc.get("usage")
    return {
        "id": doc.get("id"),
        "type": "message",
        "role": "assistant",
        "model": doc.get("model"),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage_to_messages(chat_usage(usage) if isinstance(usage, dict) else Usage()),
    }


def _stop_for(finish: Any, refused: bool, tool_calls: bool) -> str:
    stop = stop_reason_from_finish(finish if isinstance(finish, str) else None)
    if stop == "end_turn":
        if refused:
            return "refusal"
        if tool_calls:  # some OpenAI-compatible servers say "stop" after tool calls
            return "tool_use"
    return stop
