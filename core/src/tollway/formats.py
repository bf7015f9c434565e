"""Translation between the OpenAI Chat Completions and Anthropic Messages wire formats (SPEC §5).

A provider adapter translates when the client's wire format is not its own: an OpenAI-SDK client
asking an Anthropic provider for ``claude-*`` on ``/v1/chat/completions``, or an Anthropic-SDK
client asking an OpenAI(-compatible) provider for ``gpt-*`` on ``/v1/messages``. Same-format
lanes never come here: they stay byte-for-byte.

Everything in this module is pure (no I/O) so it can be property-tested, and it lives in the
core because several provider plugins need the same two directions (an Anthropic, Bedrock- or
Vertex-Claude adapter needs chat → messages; OpenAI, Azure and OpenAI-compatible adapters need
messages → chat) and plugins never import each other.

- Requests: :func:`chat_request_to_messages`, :func:`messages_request_to_chat` return a
  :class:`Translated` body plus the parameters the upstream cannot take (reported to the client
  in ``X-LangWatch-Params-Dropped``, see :func:`report_dropped`). A request that cannot be
  translated faithfully raises :class:`~tollway.BadRequest` naming the field.
- Responses: :func:`messages_response_to_chat`, :func:`chat_response_to_messages`.
- Streams: :class:`MessagesToChatStream` and :class:`ChatToMessagesStream` re-frame one SSE event
  block at a time (one ``orjson.loads`` and, on the common delta path, one ``orjson.dumps`` per
  event); :func:`reframe_sse` drives either over the upstream's byte chunks.
- Shared shapes: stop-reason maps, :func:`chat_usage` / :func:`messages_usage` (upstream usage →
  :class:`~tollway.Usage`) and back (:func:`usage_to_chat`, :func:`usage_to_messages`), and the
  SSE writers :func:`sse_data` / :func:`sse_event` / :func:`chat_chunk` /
  :func:`chat_usage_chunk`.
- Request helpers for provider plugins whose wire is neither (Gemini, Bedrock Converse, …) and
  translate from the chat hub: :class:`DroppedParams` and :func:`dropped_chat_params`,
  :func:`chat_messages`, :func:`content_parts`, :func:`text_of_parts`, :func:`part_text`,
  :func:`image_part_url`, :func:`parse_data_url`, :func:`file_part_data`,
  :func:`tool_functions`, :func:`assistant_tool_calls`, :func:`tool_call_arguments`,
  :func:`require_object`, :func:`new_chat_completion_id`, :func:`new_tool_call_id`. They check
  and report exactly as the core's own translators do (same messages, same ``param``).
"""

from __future__ import annotations

import os
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
)
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from tollway._context import RequestContext, StashKey
from tollway._errors import BadRequest, UpstreamError
from tollway._input import quote_input
from tollway._sse import SSESplitter, event_fields
from tollway._types import Usage

__all__ = [
    "CHAT_COMMON_PARAMS",
    "CHAT_NOOP_DEFAULTS",
    "CHAT_ROLES",
    "PARAMS_DROPPED_HEADER",
    "SSE_DONE",
    "ChatToMessagesStream",
    "DroppedParams",
    "MessagesToChatStream",
    "Sampling",
    "StreamTranslator",
    "Translated",
    "TranslationError",
    "assistant_tool_calls",
    "chat_chunk",
    "chat_messages",
    "chat_request_to_messages",
    "chat_response_to_messages",
    "chat_usage",
    "chat_usage_chunk",
    "content_parts",
    "dropped_chat_params",
    "file_part_data",
    "finish_reason_from_stop",
    "forget_dropped",
    "image_part_url",
    "messages_request_to_chat",
    "messages_response_to_chat",
    "messages_usage",
    "new_chat_completion_id",
    "new_tool_call_id",
    "parse_data_url",
    "part_text",
    "reframe_sse",
    "report_dropped",
    "require_object",
    "sse_data",
    "sse_event",
    "stop_reason_from_finish",
    "text_of_parts",
    "tool_call_arguments",
    "tool_functions",
    "usage_to_chat",
    "usage_to_messages",
]

#: Response header listing the request parameters the upstream could not take (SPEC §2).
PARAMS_DROPPED_HEADER = "X-LangWatch-Params-Dropped"
#: The OpenAI stream terminator.
SSE_DONE = b"data: [DONE]\n\n"

#: Which sampling parameters an upstream model accepts: ``all`` of temperature/top_p/top_k,
#: only ``one`` of temperature and top_p at a time (top_p is dropped when both come), or
#: ``none`` of them.
Sampling = Literal["all", "one", "none"]


class Translated(NamedTuple):
    """A translated request body and the client parameters left out of it."""

    body: dict[str, Any]
    dropped: tuple[str, ...]


class TranslationError(UpstreamError):
    """The upstream answered something that cannot be translated (not JSON, a stream cut short).

    Raised before the first event it lets the dispatcher fall back; after it, the client gets
    the terminal ``event: error`` frame.
    """

    reason = "untranslatable_response"


# --------------------------------------------------------------------------- shared shapes

_FINISH_FROM_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_FROM_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason_from_stop(stop_reason: str | None) -> str:
    """The OpenAI ``finish_reason`` for an Anthropic ``stop_reason``."""
    return _FINISH_FROM_STOP.get(stop_reason or "", "stop")


def stop_reason_from_finish(finish_reason: str | None) -> str:
    """The Anthropic ``stop_reason`` for an OpenAI ``finish_reason``."""
    return _STOP_FROM_FINISH.get(finish_reason or "", "end_turn")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def chat_usage(usage: Mapping[str, Any]) -> Usage:
    """Usage of an OpenAI chat completion (``prompt_tokens`` include the cached ones)."""
    details = usage.get("prompt_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    reasoning = _int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")) - cached,
        output_tokens=_int(usage.get("completion_tokens")),
        cache_read_input_tokens=cached,
        reasoning_tokens=reasoning,
    )


def messages_usage(usage: Mapping[str, Any], base: Usage | None = None) -> Usage:
    """Merge an Anthropic ``usage`` object into ``base``.

    ``message_delta`` repeats or extends what ``message_start`` said: later non-zero values win.
    """
    base = base or Usage()

    def pick(key: str, current: int) -> int:
        value = usage.get(key)
        return int(value) if isinstance(value, int) and value else current

    return Usage(
        input_tokens=pick("input_tokens", base.input_tokens),
        output_tokens=pick("output_tokens", base.output_tokens),
        cache_read_input_tokens=pick("cache_read_input_tokens", base.cache_read_input_tokens),
        cache_creation_input_tokens=pick(
            "cache_creation_input_tokens", base.cache_creation_input_tokens
        ),
        reasoning_tokens=base.reasoning_tokens,
    )


def usage_to_chat(usage: Usage) -> dict[str, Any]:
    """An OpenAI ``usage`` object: prompt tokens include cache reads and cache writes."""
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def usage_to_messages(usage: Usage) -> dict[str, Any]:
    """An Anthropic ``usage`` object (``input_tokens`` exclude cache reads and writes)."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    }


def sse_data(obj: Any) -> bytes:
    """A ``data:``-only event (the OpenAI chat stream style)."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(name: str, obj: Any) -> bytes:
    """A named event (the Anthropic style: the anthropic SDK drops events without a name)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def chat_chunk(
    id: str,
    created: int,
    model: str,
    delta: Mapping[str, Any],
    finish_reason: str | None = None,
    *,
    index: int = 0,
) -> bytes:
    """One ``chat.completion.chunk`` SSE event: ``delta`` (and ``finish_reason``) of choice
    ``index``."""
    return sse_data(
        {
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
    )


def chat_usage_chunk(id: str, created: int, model: str, usage: Usage) -> bytes:
    """The closing ``chat.completion.chunk`` SSE event of a stream that asked for
    ``stream_options.include_usage``: no choices, the ``usage`` object."""
    return sse_data(
        {
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage_to_chat(usage),
        }
    )


_DROPPED_KEY: StashKey[str] = StashKey("tollway.formats.params_dropped")


def report_dropped(ctx: RequestContext, dropped: Iterable[str]) -> None:
    """Put ``dropped`` into ``X-LangWatch-Params-Dropped`` (comma-separated) for this attempt.

    Each attempt reports its own: an empty list clears what an earlier (failed) translated
    attempt of the same request reported.
    """
    value = ",".join(dropped)
    if not value:
        forget_dropped(ctx)
        return
    ctx.response_headers[PARAMS_DROPPED_HEADER] = value
    ctx.stash[_DROPPED_KEY] = value


def forget_dropped(ctx: RequestContext) -> None:
    """Remove the header :func:`report_dropped` set (a later attempt needs no translation)."""
    value = ctx.stash.get(_DROPPED_KEY)
    if value is None:
        return
    del ctx.stash[_DROPPED_KEY]
    if ctx.response_headers.get(PARAMS_DROPPED_HEADER) == value:
        del ctx.response_headers[PARAMS_DROPPED_HEADER]


# --------------------------------------------------------------------------- request helpers
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


# --------------------------------------------------------------------------- chat → messages

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


# --------------------------------------------------------------------------- messages → chat

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


# --------------------------------------------------------------------------- responses


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


# --------------------------------------------------------------------------- streams


class StreamTranslator(Protocol):
    """Re-frames one upstream SSE event block at a time into the client's wire format."""

    def feed(self, block: bytes) -> bytes:
        """The client bytes for one complete upstream event block (``b""``: nothing)."""
        ...

    def end(self) -> bytes:
        """The closing bytes once the upstream ended; raises if it ended too early."""
        ...


def _load_event(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise TranslationError(
            f"the upstream sent an event that is not valid JSON: {data[:120]!r}"
        ) from None
    if not isinstance(doc, dict):
        raise TranslationError(f"the upstream sent an event that is not an object: {data[:120]!r}")
    return doc


class MessagesToChatStream:
    """An Anthropic Messages event stream as OpenAI ``chat.completion.chunk`` events.

    The role arrives on the first delta (at ``message_start``), text deltas as ``content``,
    each ``tool_use`` block as a tool call (index, id, name) followed by its ``input_json_delta``
    fragments as ``arguments``; ``message_delta`` gives the finish chunk, ``message_stop`` the
    usage chunk (only when the client asked for ``stream_options.include_usage``) and
    ``data: [DONE]``. Pings, block stops and thinking deltas produce nothing. An upstream
    ``error`` event is passed on as is (its ``error`` key makes the openai SDK raise).
    """

    def __init__(
        self,
        *,
        include_usage: bool = False,
        on_usage: Callable[[Usage], None] | None = None,
        created: int | None = None,
        model: str = "",
    ) -> None:
        self.include_usage = include_usage
        self.on_usage = on_usage
        self.created = created if created is not None else int(time.time())
        self.id = ""
        self.model = model
        self.usage: Usage | None = None
        self.done = False
        self._tools: dict[Any, int] = {}  # Anthropic block index → OpenAI tool call index
        self._finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return chat_chunk(self.id, self.created, self.model, delta, finish)

    def _set_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage = messages_usage(usage, self.usage)
            if self.on_usage is not None:
                self.on_usage(self.usage)

    def feed(self, block: bytes) -> bytes:
        name, data = event_fields(block)
        if not data or self.done:
            return b""
        event = _load_event(data)
        kind = event.get("type") or name
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return b""
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                text = delta.get("text")
                return self._chunk({"content": text}) if text else b""
            if delta_type == "input_json_delta":
                index = self._tools.get(event.get("index"))
                partial = delta.get("partial_json")
                if index is None or not partial:
                    return b""
                return self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": partial}}]}
                )
            return b""  # thinking, signature and citation deltas have no chat equivalent
        if kind == "content_block_start":
            content_block = event.get("content_block")
            if not isinstance(content_block, dict):
                return b""
            block_type = content_block.get("type")
            if block_type == "tool_use":
                index = self._tools[event.get("index")] = len(self._tools)
                tool_input = content_block.get("input")
                arguments = _dumps_str(tool_input) if tool_input else ""
                return self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": content_block.get("id"),
                                "type": "function",
                                "function": {
                                    "name": content_block.get("name"),
                                    "arguments": arguments,
                                },
                            }
                        ]
                    }
                )
            if block_type == "text" and content_block.get("text"):
                return self._chunk({"content": content_block["text"]})
            return b""
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self.id = str(message.get("id") or "")
                self.model = str(message.get("model") or self.model)
                self._set_usage(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            self._set_usage(event.get("usage"))
            delta = event.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            if stop is None:
                return b""
            self._finish = finish_reason_from_stop(stop)
            return self._chunk({}, self._finish)
        if kind == "message_stop":
            self.done = True
            out = b""
            if self._finish is None:
                out = self._chunk({}, "stop")
            if self.include_usage:
                out += chat_usage_chunk(self.id, self.created, self.model, self.usage or Usage())
            return out + SSE_DONE
        if kind == "error":
            self.done = True
            return block if block.endswith(b"\n\n") else block + b"\n\n"
        return b""  # ping, content_block_stop, unknown events

    def end(self) -> bytes:
        if not self.done:
            raise TranslationError("the upstream stream ended before message_stop")
        return b""


class ChatToMessagesStream:
    """An OpenAI ``chat.completion.chunk`` stream as Anthropic Messages events.

    Every event carries an ``event:`` line (the anthropic SDK silently drops events without
    one). ``message_start`` comes with the first chunk; OpenAI reports usage only at the end, so
    its ``input_tokens`` is 0 there and the real numbers arrive in ``message_delta`` (the
    upstream request must ask for ``stream_options.include_usage``). Text and tool calls become
    content blocks with contiguous indexes: a text block, then one ``tool_use`` block per tool
    call with its arguments as ``input_json_delta`` fragments. The finish reason closes the open
    block; ``message_delta`` (stop reason + usage) and ``message_stop`` follow once the usage
    chunk, ``[DONE]`` or the end of the stream arrives.
    """

    def __init__(self, *, model: str = "", on_usage: Callable[[Usage], None] | None = None) -> None:
        self.model = model
        self.on_usage = on_usage
        self.usage: Usage | None = None
        self.done = False
        self._started = False
        self._open: Any = None  # "text", an OpenAI tool index, or None
        self._open_index = -1
        self._next_index = 0
        self._tool_blocks: dict[Any, int] = {}
        self._finish: str | None = None
        self._refused = False

    def _start(self, doc: Mapping[str, Any]) -> bytes:
        self._started = True
        return sse_event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": str(doc.get("id") or "msg_tollway"),
                    "type": "message",
                    "role": "assistant",
                    "model": str(doc.get("model") or self.model),
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        )

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(
                sse_event(
                    "content_block_stop", {"type": "content_block_stop", "index": self._open_index}
                )
            )
            self._open = None

    def _open_block(self, out: list[bytes], key: Any, block: dict[str, Any]) -> int:
        self._close(out)
        index = self._open_index = self._next_index
        self._next_index += 1
        self._open = key
        out.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        return index

    def _text(self, out: list[bytes], text: str) -> None:
        if self._open != "text":
            self._open_block(out, "text", {"type": "text", "text": ""})
        out.append(
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._open_index,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )

    def _tool(self, out: list[bytes], call: Any) -> None:
        if not isinstance(call, dict):
            return
        key = ("tool", call.get("index", 0))
        function = _obj(call.get("function"))
        index = self._tool_blocks.get(key)
        if index is None:
            index = self._tool_blocks[key] = self._open_block(
                out,
                key,
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{len(self._tool_blocks)}",
                    "name": function.get("name") or "",
                    "input": {},
                },
            )
        arguments = function.get("arguments")
        if arguments:
            out.append(
                sse_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": arguments},
                    },
                )
            )

    def _final(self, out: list[bytes]) -> None:
        self._close(out)
        self.done = True
        stop = _stop_for(self._finish, self._refused, bool(self._tool_blocks))
        out.append(
            sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": usage_to_messages(self.usage or Usage()),
                },
            )
        )
        out.append(sse_event("message_stop", {"type": "message_stop"}))

    def feed(self, block: bytes) -> bytes:
        _, data = event_fields(block)
        if not data:
            return b""
        if data.strip() == b"[DONE]":
            if self.done:
                return b""
            out: list[bytes] = []
            if not self._started:
                out.append(self._start({}))
            self._final(out)
            return b"".join(out)
        doc = _load_event(data)
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.usage = chat_usage(usage)
            if self.on_usage is not None:
                self.on_usage(self.usage)
        if self.done:
            return b""
        error = doc.get("error")
        if error:
            self.done = True
            err = error if isinstance(error, dict) else {"message": str(error)}
            return sse_event(
                "error",
                {
                    "type": "error",
                    "error": {
                        "type": str(err.get("type") or "api_error"),
                        "message": str(err.get("message") or "the upstream reported an error"),
                    },
                },
            )
        out = []
        if not self._started:
            out.append(self._start(doc))
        choices = doc.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._text(out, content)
                refusal = delta.get("refusal")
                if isinstance(refusal, str) and refusal:
                    self._refused = True
                    self._text(out, refusal)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        self._tool(out, call)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self._finish = finish
                self._close(out)
        if self._finish is not None and self.usage is not None:
            self._final(out)
        return b"".join(out)

    def end(self) -> bytes:
        if self.done:
            return b""
        if self._finish is None:
            raise TranslationError("the upstream stream ended before its finish_reason")
        out: list[bytes] = []
        self._final(out)
        return b"".join(out)


async def reframe_sse(
    chunks: AsyncIterable[bytes], translator: StreamTranslator
) -> AsyncIterator[bytes]:
    """Translate an upstream SSE byte stream event by event, yielding as events complete.

    ``chunks`` is the upstream body (e.g. :func:`tollway.provider.relay_sse` without an
    inspector, which maps transport failures). An event left unterminated at the end is still
    translated; an upstream that ends before its terminal event raises
    :class:`TranslationError` (the core turns it into the terminal ``event: error`` frame).
    """
    splitter = SSESplitter()
    iterator = aiter(chunks)
    try:
        async for chunk in iterator:
            out = []
            for block in splitter.feed(chunk):
                translated = translator.feed(block)
                if translated:
                    out.append(translated)
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
        tail = splitter.tail()
        last = translator.feed(tail + b"\n\n") if tail.strip() else b""
        last += translator.end()
        if last:
            yield last
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
