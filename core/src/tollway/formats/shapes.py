"""Shared shapes of the chat ⇄ messages translators: the errors, stop-reason maps, usage
conversions, SSE writers and the ``X-LangWatch-Params-Dropped`` report."""

from __future__ import annotations

from collections.abc import (
    Iterable,
    Mapping,
)
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

import orjson

from tollway._context import RequestContext, StashKey
from tollway._errors import UpstreamError
from tollway._types import Usage

__all__ = [
    "PARAMS_DROPPED_HEADER",
    "SSE_DONE",
    "Sampling",
    "Translated",
    "TranslationError",
    "chat_chunk",
    "chat_usage",
    "chat_usage_chunk",
    "dropped_header_value",
    "finish_reason_from_stop",
    "forget_dropped",
    "messages_usage",
    "report_dropped",
    "responses_usage",
    "sse_data",
    "sse_event",
    "stop_reason_from_finish",
    "usage_to_chat",
    "usage_to_messages",
    "usage_to_responses",
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


def responses_usage(usage: Mapping[str, Any]) -> Usage:
    """Usage of an OpenAI Responses API response (``input_tokens`` include the cached ones)."""
    details = usage.get("input_tokens_details") or {}
    out_details = usage.get("output_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    reasoning = _int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    return Usage(
        input_tokens=_int(usage.get("input_tokens")) - cached,
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_input_tokens=cached,
        reasoning_tokens=reasoning,
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


def usage_to_responses(usage: Usage) -> dict[str, Any]:
    """An OpenAI Responses ``usage`` object: input tokens include cache reads and writes."""
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_input_tokens,
            "cache_write_tokens": usage.cache_creation_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": prompt + usage.output_tokens,
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


def dropped_header_value(dropped: Iterable[str]) -> str:
    """The ``X-LangWatch-Params-Dropped`` value of ``dropped``: comma-separated, each name
    percent-encoded but for ``[]`` (the names come from the client's JSON: a line break in a
    field name must not become a header line, a comma not a second name). Idempotent: a value
    read back from the header and reported again stays the same."""
    return ",".join(quote(name, safe="[]%") for name in dropped)


def report_dropped(ctx: RequestContext, dropped: Iterable[str]) -> None:
    """Put ``dropped`` into ``X-LangWatch-Params-Dropped`` (:func:`dropped_header_value`) for
    this attempt.

    Each attempt reports its own: an empty list clears what an earlier (failed) translated
    attempt of the same request reported.
    """
    value = dropped_header_value(dropped)
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
