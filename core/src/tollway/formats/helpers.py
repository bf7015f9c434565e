"""Request helpers: the building blocks of a chat → <wire> request translator, public so that
provider plugins translating the chat hub to their own wire (Gemini, Bedrock Converse, …)
validate and report exactly as the core's translators do."""

from __future__ import annotations

import os
from collections.abc import (
    Collection,
    Iterator,
    Mapping,
)
from types import MappingProxyType
from typing import Any

import orjson

from tollway._errors import BadRequest
from tollway._input import quote_input

__all__ = [
    "CHAT_COMMON_PARAMS",
    "CHAT_NOOP_DEFAULTS",
    "CHAT_ROLES",
    "DroppedParams",
    "assistant_tool_calls",
    "chat_messages",
    "content_parts",
    "dropped_chat_params",
    "file_part_data",
    "image_part_url",
    "new_chat_completion_id",
    "new_tool_call_id",
    "parse_data_url",
    "part_text",
    "require_object",
    "text_of_parts",
    "tool_call_arguments",
    "tool_functions",
]


#
# The building blocks of a chat → <wire> request translator, public so that provider plugins
# translating the chat hub to their own wire (Gemini, Bedrock Converse, …) validate and report
# exactly as the core's translators do.

#: Chat parameters that mean "default" at these values: leaving them out changes nothing, so
#: :func:`dropped_chat_params` does not report them.
CHAT_NOOP_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "n": 1,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "logprobs": False,
        "parallel_tool_calls": True,
        "response_format": {"type": "text"},
        "store": False,
    }
)
#: The chat request keys every chat → <wire> translator maps: model, messages, token limits,
#: stop sequences, temperature and top_p, streaming and tools.
CHAT_COMMON_PARAMS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
    }
)


class DroppedParams:
    """Names of the request parameters a translation left out, in first-seen order.

    ``names`` is an insertion-ordered dict (values unused); :meth:`result` is the tuple that
    :class:`Translated` carries and :func:`report_dropped` puts in the response header.
    """

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: dict[str, None] = {}

    def add(self, name: str) -> None:
        """Record ``name`` (again: no effect)."""
        self.names[name] = None

    def result(self) -> tuple[str, ...]:
        """The names, in the order they were first added."""
        return tuple(self.names)


def dropped_chat_params(body: Mapping[str, Any], handled: Collection[str]) -> DroppedParams:
    """The top-level keys of a chat request that a translator taking ``handled`` leaves out.

    ``null`` values and :data:`CHAT_NOOP_DEFAULTS` at their default are not counted. The
    translator adds what else it cannot carry (a part type, a tool option …) to the result.
    """
    dropped = DroppedParams()
    for key, value in body.items():
        if key in handled or value is None:
            continue
        if key in CHAT_NOOP_DEFAULTS and value == CHAT_NOOP_DEFAULTS[key]:
            continue
        dropped.add(key)
    return dropped


def require_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else :class:`~tollway.BadRequest` naming ``where``."""
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object", param=where)
    return value


def parse_data_url(
    url: str, where: str, *, upstream: str = "this provider"
) -> tuple[str, str] | None:
    """``(media type, base64 data)`` of a base64 ``data:`` URL, None for any other URL.

    A ``data:`` URL that is not base64 raises :class:`~tollway.BadRequest` naming ``where``
    (``upstream`` names the receiver in the message). A missing media type is
    ``application/octet-stream``; the data is returned as it is (not decoded or checked).
    """
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    params = header.split(";")
    if not sep or "base64" not in params[1:]:
        raise BadRequest(
            f"{where}: only base64 data URLs (data:<media type>;base64,<data>) can be sent to "
            f"{upstream}",
            param=where,
        )
    return params[0] or "application/octet-stream", data


def text_of_parts(content: Any, where: str, *, upstream: str | None = None) -> list[str]:
    """The texts of a string or an array of text parts (system, developer, tool content).

    ``null`` is no text; ``text``, ``input_text``, ``output_text`` and ``refusal`` parts give
    their text; any other part or shape raises :class:`~tollway.BadRequest` naming ``where``
    (and ``upstream``, when given, as the receiver that takes text only).
    """
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise BadRequest(f"{where} must be a string or an array of content parts", param=where)
    texts = []
    for i, raw in enumerate(content):
        part = require_object(raw, f"{where}[{i}]")
        kind = part.get("type")
        if kind == "refusal":
            text = part.get("refusal")
        elif kind in ("text", "input_text", "output_text"):
            text = part.get("text")
        else:
            only = "translated here" if upstream is None else f"sent here to {upstream}"
            raise BadRequest(
                f"{where}[{i}]: only text parts can be {only} (got {quote_input(kind)})",
                param=where,
            )
        if not isinstance(text, str):
            raise BadRequest(f"{where}[{i}].text must be a string", param=where)
        texts.append(text)
    return texts


#: The roles of chat messages (``function`` is the legacy form of ``tool``).
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def chat_messages(
    messages: list[Any], dropped: DroppedParams
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(where, role, message)`` for each chat message, checked on the way.

    Each message must be an object with one of the :data:`CHAT_ROLES` and a ``tool`` message
    a ``tool_call_id`` (a non-empty string), else :class:`~tollway.BadRequest` names it; a
    ``name`` is reported as ``messages.name`` in ``dropped``. Lazy: a message is checked when
    iteration reaches it. Legacy ``function`` messages are passed on for the caller to refuse
    or translate.
    """
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        message = require_object(raw, where)
        role = message.get("role")
        if message.get("name") is not None:
            dropped.add("messages.name")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise BadRequest(
                f"{where}.role {quote_input(role)} is not a chat message role", param=where
            )
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise BadRequest(f"{where}.tool_call_id is required on a tool message", param=where)
        yield where, role, message


def content_parts(content: Any, where: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """``(where, part, type)`` for each part of a message's array ``content``.

    ``where`` names the message; ``content`` that is not an array, or a part that is not an
    object, raises :class:`~tollway.BadRequest` (a string content is the caller's to take
    before). Lazy, like :func:`chat_messages`.
    """
    if not isinstance(content, list):
        raise BadRequest(
            f"{where}.content must be a string or an array of content parts", param=where
        )
    for j, raw in enumerate(content):
        part_where = f"{where}.content[{j}]"
        part = require_object(raw, part_where)
        yield part_where, part, part.get("type")


def part_text(part: Mapping[str, Any], where: str) -> str:
    """The ``text`` of a text content part at ``where`` (a string, maybe empty)."""
    text = part.get("text")
    if not isinstance(text, str):
        raise BadRequest(f"{where}.text must be a string", param=where)
    return text


def image_part_url(part: Mapping[str, Any], where: str, dropped: DroppedParams) -> str:
    """The URL of a chat ``image_url`` content part at ``where``.

    ``image_url`` may be an object or (leniently) the URL itself; a ``detail`` other than
    ``auto`` is reported as ``image_url.detail`` in ``dropped``.
    """
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise BadRequest(f"{where}.image_url.url must be a string", param=where)
    if isinstance(image, dict) and image.get("detail") not in (None, "auto"):
        dropped.add("image_url.detail")
    return url


def file_part_data(
    part: Mapping[str, Any], where: str, *, upstream: str = "this provider"
) -> tuple[str, str] | None:
    """``(media type, base64 data)`` of a chat ``file`` part's inline ``file.file_data``.

    None when the part has no inline data (a ``file_id``) or its data is not a ``data:`` URL;
    a ``data:`` URL that is not base64 raises as in :func:`parse_data_url`.
    """
    data = _obj(part.get("file")).get("file_data")
    if not isinstance(data, str):
        return None
    return parse_data_url(data, f"{where}.file.file_data", upstream=upstream)


def tool_functions(tools: list[Any], dropped: DroppedParams) -> Iterator[dict[str, Any]]:
    """The ``function`` objects of a chat request's function tools, checked on the way.

    A tool of another type (``custom``, a hosted tool) is reported as ``tools.<type>`` in
    ``dropped`` and skipped; a function tool needs a non-empty ``function.name``, else
    :class:`~tollway.BadRequest` names it. ``function.strict`` is the caller's to report (after
    what it reports about the function's schema). Lazy, like :func:`chat_messages`.
    """
    for j, raw in enumerate(tools):
        where = f"tools[{j}]"
        tool = require_object(raw, where)
        if tool.get("type", "function") != "function":
            dropped.add(f"tools.{tool.get('type')}")
            continue
        function = require_object(tool.get("function"), f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}.function.name is required", param=where)
        yield function


def assistant_tool_calls(
    message: Mapping[str, Any], where: str
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(where, call, function)`` for each entry of an assistant message's ``tool_calls``.

    Lazy: a ``tool_calls`` that is not an array, or an entry or its ``function`` that is not
    an object, raises :class:`~tollway.BadRequest` when iteration reaches it. Checking the
    id and name (and parsing the arguments, :func:`tool_call_arguments`) is the caller's.
    """
    calls = message.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise BadRequest(f"{where}.tool_calls must be an array", param=where)
    for k, raw in enumerate(calls):
        call_where = f"{where}.tool_calls[{k}]"
        call = require_object(raw, call_where)
        yield call_where, call, require_object(call.get("function"), f"{call_where}.function")


def tool_call_arguments(
    arguments: Any, where: str, *, upstream: str = "this provider", strict: bool = False
) -> dict[str, Any]:
    """A chat tool call's ``function.arguments`` (a JSON string) as the object it encodes.

    An object is taken as it is; a missing (``null``) or blank string is ``{}``; a string
    that is not a JSON object raises :class:`~tollway.BadRequest` naming ``where`` (the tool
    call) and ``upstream``. Arguments of another type count as none, unless ``strict``: then
    they raise too.
    """
    if isinstance(arguments, dict):
        return arguments
    value: Any = {}
    if isinstance(arguments, str):
        if arguments.strip():
            try:
                value = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                value = None
    elif strict and arguments is not None:
        value = None
    if not isinstance(value, dict):
        raise BadRequest(
            f"{where}.function.arguments must be a JSON object to be sent to {upstream}",
            param=where,
        )
    return value


def new_chat_completion_id() -> str:
    """A fresh ``chatcmpl-…`` id for a chat completion the upstream gave no id of this form."""
    return "chatcmpl-" + os.urandom(12).hex()


def new_tool_call_id() -> str:
    """A fresh OpenAI-style ``call_…`` tool call id (for wires whose calls carry none)."""
    return "call_" + os.urandom(12).hex()


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()
