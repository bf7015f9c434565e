"""Claude's Messages answers turned into a gateway result: relayed to a Messages client, or
translated for an OpenAI chat client.

Shared with the adapters that reach the Messages wire elsewhere (Claude on Vertex AI), so
usage accounting and translation stay the same whichever provider serves Claude.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from tollway import RequestContext
from tollway.formats import (
    MessagesToChatStream,
    TranslationError,
    messages_response_to_chat,
    messages_usage,
    reframe_sse,
)
from tollway.provider import ProviderResult, read_body, relay_sse, response_headers
from tollway.sse import event_fields

__all__ = ["messages_result", "messages_to_chat_result", "messages_usage_inspector"]


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _is_sse(ctx: RequestContext, resp: aiohttp.ClientResponse) -> bool:
    return ctx.stream and resp.headers.get("content-type", "").startswith("text/event-stream")


def messages_usage_inspector(ctx: RequestContext) -> Callable[[bytes], bytes | None]:
    """A :func:`~tollway.provider.relay_sse` inspector that sets ``ctx.usage`` from the
    ``message_start`` and ``message_delta`` events as they pass (the events are unchanged)."""

    def inspect(event: bytes) -> bytes | None:
        name, data = event_fields(event)
        if name not in ("message_start", "message_delta"):
            return None
        doc = _json_object(data)
        if doc is None:
            return None
        if name == "message_start":
            usage = (doc.get("message") or {}).get("usage")
        else:
            usage = doc.get("usage")
        if isinstance(usage, dict):
            ctx.usage = messages_usage(usage, ctx.usage)
        return None

    return inspect


async def messages_result(ctx: RequestContext, resp: aiohttp.ClientResponse) -> ProviderResult:
    """A Messages answer for a Messages client, relayed as it came (a stream event by event);
    ``ctx.usage`` is read on the way."""
    headers = response_headers(resp.headers.items())
    if _is_sse(ctx, resp):
        events = relay_sse(resp, messages_usage_inspector(ctx), b"event: message_")
        return ProviderResult(resp.status, headers, events=events, close=resp.close)
    data = await read_body(resp)
    doc = _json_object(data)
    if doc is not None and isinstance(doc.get("usage"), dict):
        ctx.usage = messages_usage(doc["usage"])
    return ProviderResult(resp.status, headers, body=data)


async def messages_to_chat_result(
    ctx: RequestContext,
    resp: aiohttp.ClientResponse,
    *,
    model: str,
    upstream: str,
    set_model: bool = False,
) -> ProviderResult:
    """A Messages answer for an OpenAI chat client: a ``chat.completion`` (``model`` as its
    ``model`` when ``set_model``, else the upstream's) or a ``chat.completion.chunk`` stream.

    ``ctx.usage`` is set; a body that is not a JSON message raises
    :class:`~tollway.formats.TranslationError` naming ``upstream``.
    """
    out_headers = response_headers(resp.headers.items())
    if _is_sse(ctx, resp):
        options = ctx.body.get("stream_options")
        translator = MessagesToChatStream(
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            on_usage=lambda usage: setattr(ctx, "usage", usage),
            model=model,
        )
        events = reframe_sse(relay_sse(resp), translator)
        return ProviderResult(resp.status, out_headers, events=events, close=resp.close)
    data = await read_body(resp)
    doc = _json_object(data)
    if doc is None:
        raise TranslationError(
            f"{upstream} answered HTTP {resp.status} with a body that is not a JSON message, so "
            "it cannot be translated to a chat completion"
        )
    if isinstance(doc.get("usage"), dict):
        ctx.usage = messages_usage(doc["usage"])
    answer = messages_response_to_chat(doc)
    if set_model:
        answer["model"] = model
    return ProviderResult(resp.status, out_headers, body=orjson.dumps(answer))
