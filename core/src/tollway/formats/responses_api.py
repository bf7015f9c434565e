"""The OpenAI Responses API (``POST /v1/responses``) → the chat hub: requests
(:func:`responses_request_to_chat`).

The answers come back through :mod:`tollway.formats.responses_output` (complete) and
:mod:`tollway.formats.responses_stream` (streams). The
Responses API keeps conversation state upstream (``previous_response_id``, ``conversation``,
stored items); chat completions keep none, so a request that needs such state is refused with
a 400 saying what to send instead (:data:`STATEFUL_PARAMS`).
"""

from __future__ import annotations

from collections.abc import (
    Mapping,
)
from types import MappingProxyType
from typing import Any

from tollway._errors import BadRequest
from tollway._input import quote_input
from tollway.formats.helpers import (
    DroppedParams,
    _dumps_str,
    _obj,
    require_object,
)
from tollway.formats.responses_tools import chat_tool_choice, chat_tools, custom_call_arguments
from tollway.formats.shapes import Translated

__all__ = [
    "RESPONSES_NOOP_DEFAULTS",
    "STATEFUL_PARAMS",
    "NeedsStoredState",
    "responses_request_to_chat",
]

#: Responses parameters that mean "default" at these values: leaving them out changes nothing.
RESPONSES_NOOP_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "parallel_tool_calls": True,
        "store": False,
        "background": False,
        "truncation": "disabled",
        "include": [],
        "metadata": {},
        "top_logprobs": 0,
        "service_tier": "auto",
        "reasoning": {},
    }
)
#: Parameters that need the conversation state a Responses upstream keeps, with what to do
#: instead. Chat completions keep none, so a translated request carrying one is refused.
STATEFUL_PARAMS: Mapping[str, str] = MappingProxyType(
    {
        "previous_response_id": "send the whole conversation in 'input' instead (the earlier "
        "turns' output items included) and leave previous_response_id out",
        "conversation": "send the whole conversation in 'input' instead and leave conversation out",
        "background": "leave background out (or false) and wait for the answer, or stream it",
        "prompt": "send the prompt's text as 'instructions' and 'input' instead",
    }
)


class NeedsStoredState(BadRequest):
    """A Responses request that needs state only a Responses upstream keeps
    (:data:`STATEFUL_PARAMS`, ``item_reference`` items): a 400 from the chat translation. The
    gateway skips a translating provider for it, so a native one later in the chain may still
    serve it; when none does, the client gets this 400."""


_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "stream",
        "stream_options",
        "user",
    }
)
_WHY_STATELESS = (
    "is not available for this model: its provider has no Responses API, so the gateway "
    "translates the request to chat completions, which keep no state upstream"
)


def responses_request_to_chat(
    body: Mapping[str, Any], *, model: str, max_tokens_field: str = "max_tokens"
) -> Translated:
    """An OpenAI Responses request as an OpenAI chat request for ``model``.

    ``instructions`` becomes the first system message; ``input`` (a string, or message,
    ``function_call``, ``custom_tool_call`` and their ``…_output`` items) becomes chat messages,
    tool calls and tool messages; function and custom tools, in ``tools`` or in
    ``additional_tools`` items (namespaces flattened), become chat function tools
    (:mod:`tollway.formats.responses_tools`: a custom tool takes ``{"input": <string>}``);
    ``max_output_tokens`` is sent as ``max_tokens_field``; ``text.format`` becomes
    ``response_format``. Streams ask for ``stream_options.include_usage`` (the Responses
    stream ends with the usage). ``reasoning``, ``include``, hosted tools and everything else
    chat has no place for are dropped and reported. A parameter that needs stored state
    (:data:`STATEFUL_PARAMS`, ``item_reference`` items) raises :class:`NeedsStoredState` (a
    :class:`~tollway.BadRequest`).
    """
    dropped = DroppedParams()
    for key, value in body.items():
        if value is None or key in _HANDLED:
            continue
        if key in RESPONSES_NOOP_DEFAULTS and value == RESPONSES_NOOP_DEFAULTS[key]:
            continue
        if key in STATEFUL_PARAMS:
            raise NeedsStoredState(f"'{key}' {_WHY_STATELESS}: {STATEFUL_PARAMS[key]}", param=key)
        dropped.add(key)

    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            messages.append({"role": "system", "content": instructions})
    elif instructions is not None:
        raise BadRequest("'instructions' must be a string", param="instructions")
    messages.extend(_input_messages(body.get("input"), dropped))
    out: dict[str, Any] = {"model": model, "messages": messages}

    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        out[max_tokens_field] = max_tokens
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]

    tools = chat_tools(body, dropped)
    choice = body.get("tool_choice")
    if tools:
        choice = chat_tool_choice(choice, tools, dropped)
    if tools:  # (an allowed_tools choice may have narrowed them to none)
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = choice
        if body.get("parallel_tool_calls") is False:
            out["parallel_tool_calls"] = False
    elif choice not in (None, "auto", "none"):
        dropped.add("tool_choice")  # no tool left to choose

    response_format = _response_format(body.get("text"), dropped)
    if response_format is not None:
        out["response_format"] = response_format
    user = body.get("user")
    if user is not None:
        out["user"] = user
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return Translated(out, dropped.result())


# --------------------------------------------------------------------------- input items

_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
#: The items answering a tool call: chat tool messages.
_OUTPUTS = ("function_call_output", "custom_tool_call_output")


def _input_messages(items: Any, dropped: DroppedParams) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if items is None:
        raise BadRequest("missing required field 'input'", param="input")
    if not isinstance(items, list):
        raise BadRequest("'input' must be a string or an array of input items", param="input")
    messages: list[dict[str, Any]] = []
    #: Images and files of function call outputs: chat tool messages carry text only, so they
    #: follow the tool messages as one user message.
    pending: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        where = f"input[{i}]"
        item = require_object(raw, where)
        kind = item.get("type")
        if kind == "additional_tools":
            continue  # tools: see responses_tools.chat_tools
        if kind not in _OUTPUTS and pending:
            messages.append({"role": "user", "content": pending})
            pending = []
        if kind == "message" or (kind is None and "role" in item):
            message = _message(item, where, dropped)
            if message is not None:
                messages.append(message)
        elif kind == "function_call":
            _tool_call(messages, item, where, _function_arguments(item.get("arguments")))
        elif kind == "custom_tool_call":
            tool_input = item.get("input")
            if not isinstance(tool_input, str):
                raise BadRequest(f"{where}.input must be a string", param=where)
            _tool_call(messages, item, where, custom_call_arguments(tool_input))
        elif kind in _OUTPUTS:
            messages.append(_tool_output(item, where, pending, dropped))
        elif kind == "item_reference":
            raise NeedsStoredState(
                f"{where}: item references {_WHY_STATELESS}: send the item itself",
                param=where,
            )
        else:
            dropped.add(f"input.{kind}")  # reasoning, hosted tool calls …
    if pending:
        messages.append({"role": "user", "content": pending})
    return messages


def _message(item: dict[str, Any], where: str, dropped: DroppedParams) -> dict[str, Any] | None:
    role = item.get("role")
    if not isinstance(role, str) or role not in _MESSAGE_ROLES:
        raise BadRequest(f"{where}.role {quote_input(role)} is not a message role", param=where)
    content = item.get("content")
    if role == "assistant":
        text = _assistant_text(content, where, dropped)
        return {"role": "assistant", "content": text} if text else None
    # Instructions are "equivalent to a developer message"; chat's "system" is understood by
    # every chat upstream (OpenAI's reasoning models take it as developer).
    chat_role = "user" if role == "user" else "system"
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise BadRequest(
            f"{where}.content must be a string or an array of content parts", param=where
        )
    parts = []
    for j, raw in enumerate(content):
        part = _input_part(require_object(raw, f"{where}.content[{j}]"), f"{where}.content[{j}]")
        if part is None:
            dropped.add(f"content.{_obj(raw).get('type')}")
        elif chat_role == "system" and part["type"] != "text":
            dropped.add(f"content.{raw['type']}")  # chat system messages carry text only
        else:
            parts.append(part)
    if chat_role == "system":
        text = "".join(p["text"] for p in parts)
        return {"role": "system", "content": text} if text else None
    return {"role": "user", "content": parts}


def _input_part(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    """A Responses input content part as a chat content part (None: chat has no such part)."""
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{where}.text must be a string", param=where)
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            return None  # by file_id: only the Files API knows it
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: dict[str, Any] = {}
        if isinstance(part.get("file_data"), str):
            file["file_data"] = part["file_data"]
        elif isinstance(part.get("file_id"), str):
            file["file_id"] = part["file_id"]
        else:
            return None  # file_url: chat has no URL files
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    return None


def _assistant_text(content: Any, where: str, dropped: DroppedParams) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(
            f"{where}.content must be a string or an array of content parts", param=where
        )
    texts = []
    for j, raw in enumerate(content):
        part = require_object(raw, f"{where}.content[{j}]")
        kind = part.get("type")
        text = part.get("refusal") if kind == "refusal" else part.get("text")
        if kind in ("output_text", "input_text", "text", "refusal"):
            if not isinstance(text, str):
                raise BadRequest(f"{where}.content[{j}] must carry its text", param=where)
            texts.append(text)
        else:
            dropped.add(f"content.{kind}")
    return "".join(texts)


def _function_arguments(arguments: Any) -> str:
    if isinstance(arguments, dict):
        return _dumps_str(arguments)
    return arguments if isinstance(arguments, str) else "{}"


def _tool_call(
    messages: list[dict[str, Any]], item: dict[str, Any], where: str, arguments: str
) -> None:
    """Add a ``function_call`` or ``custom_tool_call`` item as a tool call of the assistant
    message before it (a new one when the last message is not the assistant's)."""
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"{where}.call_id is required on a {item['type']} item", param=where)
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name is required on a {item['type']} item", param=where)
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(
    item: dict[str, Any], where: str, pending: list[dict[str, Any]], dropped: DroppedParams
) -> dict[str, Any]:
    """A ``function_call_output`` or ``custom_tool_call_output`` item as a tool message (its
    images and files go to ``pending``)."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"{where}.call_id is required on a {item['type']} item", param=where)
    output = item.get("output")
    if isinstance(output, str):
        return {"role": "tool", "tool_call_id": call_id, "content": output}
    if not isinstance(output, list):
        raise BadRequest(
            f"{where}.output must be a string or an array of content parts", param=where
        )
    texts: list[dict[str, Any]] = []
    for j, raw in enumerate(output):
        part = _input_part(require_object(raw, f"{where}.output[{j}]"), f"{where}.output[{j}]")
        if part is None:
            dropped.add(f"content.{_obj(raw).get('type')}")
        elif part["type"] == "text":
            texts.append(part)
        else:
            pending.append(part)
    return {"role": "tool", "tool_call_id": call_id, "content": texts}


# --------------------------------------------------------------------------- formats


def _response_format(text: Any, dropped: DroppedParams) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise BadRequest("'text' must be an object", param="text")
    for key, value in text.items():
        if key != "format" and value is not None:
            dropped.add(f"text.{key}")  # verbosity
    fmt = text.get("format")
    if fmt is None:
        return None
    fmt = require_object(fmt, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = require_object(fmt.get("schema"), "text.format.schema")
        spec: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": schema}
        if isinstance(fmt.get("description"), str):
            spec["description"] = fmt["description"]
        if isinstance(fmt.get("strict"), bool):
            spec["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": spec}
    dropped.add("text.format")
    return None
