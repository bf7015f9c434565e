"""The Responses API's answers from the chat hub: :func:`chat_response_to_responses` (a
complete ``chat.completion`` as a ``response`` object) and the shapes the stream translator
(:mod:`tollway.formats.responses_stream`) shares with it."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from tollway.formats.helpers import _dumps_str, _obj, new_tool_call_id
from tollway.formats.responses_tools import custom_tool_input, custom_tool_names
from tollway.formats.shapes import chat_usage, usage_to_responses

__all__ = ["TRANSLATED_RESPONSE_PREFIX", "chat_response_to_responses"]

#: The id prefix of responses the gateway made from a chat completion (never stored anywhere,
#: so ``GET /v1/responses/{id}`` can say why it has nothing).
TRANSLATED_RESPONSE_PREFIX = "resp_tw_"


def _new_response_id() -> str:
    """A fresh response id for a translated answer (:data:`TRANSLATED_RESPONSE_PREFIX`)."""
    return TRANSLATED_RESPONSE_PREFIX + os.urandom(16).hex()


def _response_status(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """``(status, incomplete_details)`` of a response whose chat answer ended with
    ``finish_reason``: ``length`` and ``content_filter`` leave it ``incomplete``."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    request: Mapping[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Responses ``response`` object. The request's settings are echoed as OpenAI does;
    what the translation dropped (``reasoning``, ``store`` …) is echoed as not applied."""
    req = request or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None,
        "incomplete_details": incomplete_details,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": req.get("parallel_tool_calls", True) is not False,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": req.get("temperature"),
        "text": req.get("text") or {"format": {"type": "text"}},
        "tool_choice": req.get("tool_choice") or "auto",
        "tools": req.get("tools") or [],
        "top_p": req.get("top_p"),
        "truncation": "disabled",
        "usage": usage,
        "user": req.get("user"),
        "metadata": req.get("metadata") or {},
    }


def _message_item(item_id: str, status: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant ``message`` output item."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def _text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _function_call_item(
    item_id: str, status: str, call_id: str, name: str, arguments: str
) -> dict[str, Any]:
    """A ``function_call`` output item."""
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _custom_tool_call_item(
    item_id: str, status: str, call_id: str, name: str, tool_input: str
) -> dict[str, Any]:
    """A ``custom_tool_call`` output item."""
    return {
        "id": item_id,
        "type": "custom_tool_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "input": tool_input,
    }


def _new_item_id(prefix: str) -> str:
    """A fresh output item id (``msg_…``, ``fc_…``, ``ctc_…``)."""
    return prefix + os.urandom(16).hex()


def chat_response_to_responses(
    doc: Mapping[str, Any],
    *,
    request: Mapping[str, Any] | None = None,
    response_id: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` (its first choice) as a Responses ``response`` object.

    Text and refusal become one ``message`` item (``output_text`` / ``refusal`` parts), each
    tool call a ``function_call`` item (``call_id`` = the tool call's id), or a
    ``custom_tool_call`` item when it calls one of the request's custom tools (``input`` = the
    ``input`` string of its arguments). A ``length`` finish leaves the response ``incomplete``
    (``max_output_tokens``), ``content_filter`` too. The ``request`` (the client's Responses
    request) is echoed as OpenAI echoes it, and tells which tools are custom.
    """
    choices = doc.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    message = _obj(choice.get("message"))
    finish = choice.get("finish_reason")
    status, incomplete = _response_status(finish if isinstance(finish, str) else None)
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    if isinstance(content, str) and content:
        parts.append(_text_part(content))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    output: list[dict[str, Any]] = []
    if parts:
        output.append(_message_item(_new_item_id("msg_"), status, parts))
    calls = message.get("tool_calls")
    custom = custom_tool_names(request) if calls else frozenset()
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        function = _obj(call.get("function"))
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else _dumps_str(arguments or {})
        call_id = str(call.get("id") or new_tool_call_id())
        name = str(function.get("name") or "")
        if name in custom:
            output.append(
                _custom_tool_call_item(
                    _new_item_id("ctc_"), "completed", call_id, name, custom_tool_input(arguments)
                )
            )
        else:
            output.append(
                _function_call_item(_new_item_id("fc_"), "completed", call_id, name, arguments)
            )
    usage = doc.get("usage")
    created = doc.get("created")
    if created_at is None:
        created_at = created if isinstance(created, int) else int(time.time())
    return _response_object(
        response_id=response_id or _new_response_id(),
        created_at=created_at,
        model=str(doc.get("model") or ""),
        status=status,
        output=output,
        usage=usage_to_responses(chat_usage(usage)) if isinstance(usage, dict) else None,
        request=request,
        incomplete_details=incomplete,
    )
