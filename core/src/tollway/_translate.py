"""The core's hub translation: a client format an adapter does not serve itself, translated to
the adapter's native hub format around its :meth:`~tollway.provider.Provider.send`.

Chat is the hub. For an adapter whose :attr:`~tollway.provider.Provider.translated` holds the
client's endpoint, the request is translated (``tollway.formats``), the adapter is called with
a context that looks like a native request (endpoint, body, raw bytes, path, no query string,
no Anthropic headers), the context is restored, and the answer — a JSON body or an SSE stream
— is translated back. The adapter needs no translation code of its own.

A Responses API request goes to chat first; when the adapter serves chat only through the
core's Messages lane, that lane then takes the chat request on (responses → chat → messages
and back), the same code as for a chat client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from tollway._errors import UpstreamHTTPError
from tollway._types import Usage
from tollway.formats import (
    PARAMS_DROPPED_HEADER,
    ChatToMessagesStream,
    ChatToResponsesStream,
    MessagesToChatStream,
    TranslationError,
    chat_request_to_messages,
    chat_response_to_messages,
    chat_response_to_responses,
    chat_usage,
    forget_dropped,
    messages_request_to_chat,
    messages_response_to_chat,
    messages_usage,
    reframe_sse,
    report_dropped,
    responses_request_to_chat,
)
from tollway.routing import default_max_tokens

if TYPE_CHECKING:
    from tollway._context import RequestContext
    from tollway._types import RouteTarget
    from tollway.provider import Provider, ProviderResult, UpstreamHTTP

__all__ = ["send_via"]

_PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages"}
#: Client headers of one format that mean nothing to the other's upstream.
_FOREIGN = {"messages": ("anthropic-",), "chat": ("openai-",), "responses": ("openai-beta",)}
#: A chat parameter an adapter (or the Messages lane) reports dropped, by the name the
#: Responses client sent it under.
_RESPONSES_NAMES = {
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
}


async def send_via(
    provider: Provider, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
) -> ProviderResult:
    """``provider.send``, translating through the hub when the provider does not serve the
    client's endpoint itself."""
    endpoint = ctx.endpoint
    if endpoint not in provider.translated:
        forget_dropped(ctx)  # what an earlier translated attempt reported is not this one's
        return await provider.send(ctx, target, http)
    if endpoint == "responses":
        return await _send_responses(provider, ctx, target, http)
    if endpoint == "messages":
        body, dropped = messages_request_to_chat(ctx.body, model=target.model)
        native = "chat"
    else:
        default = None
        if ctx.body.get("max_completion_tokens") is None and ctx.body.get("max_tokens") is None:
            default = default_max_tokens(ctx, target.model, provider.config.config)
        body, dropped = chat_request_to_messages(
            ctx.body, model=target.model, default_max_tokens=default
        )
        native = "messages"
    report_dropped(ctx, dropped)
    try:
        result = await _send_as(provider, ctx, target, http, native, body)
    except UpstreamHTTPError as exc:
        exc.body = _error_for_client(exc.status, exc.body, anthropic=native == "chat")
        raise
    # The adapter may report what its own upstream cannot take: the client hears both.
    own = ctx.response_headers.get(PARAMS_DROPPED_HEADER, "")
    report_dropped(ctx, dict.fromkeys([*dropped, *filter(None, own.split(","))]))
    return _translate_result(ctx, target, native, result)


async def _send_responses(
    provider: Provider, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
) -> ProviderResult:
    """A Responses API request as chat (then on through the Messages lane when the adapter
    serves chat that way), the answer back as a ``response``."""
    body, dropped = responses_request_to_chat(ctx.body, model=target.model)
    report_dropped(ctx, dropped)
    before = ctx.usage
    try:
        result = await _send_as(provider, ctx, target, http, "chat", body)
    except UpstreamHTTPError as exc:
        exc.body = _error_for_client(exc.status, exc.body, anthropic=False)
        raise
    own = ctx.response_headers.get(PARAMS_DROPPED_HEADER, "")
    renamed = [_RESPONSES_NAMES.get(name, name) for name in filter(None, own.split(","))]
    report_dropped(ctx, dict.fromkeys([*dropped, *renamed]))
    return _responses_result(ctx, target, result, before)


def _responses_result(
    ctx: RequestContext, target: RouteTarget, result: ProviderResult, before: Usage | None
) -> ProviderResult:
    """The chat answer as a Responses one. Usage: the adapter's own report wins (a Messages
    upstream's counts cache writes, which chat usage cannot carry); else the chat usage."""
    mine: list[Usage] = []

    def on_usage(usage: Usage) -> None:
        if ctx.usage is before or (mine and ctx.usage is mine[-1]):
            ctx.usage = usage
            mine.append(usage)

    if result.events is not None:
        translator = ChatToResponsesStream(model=target.model, request=ctx.body, on_usage=on_usage)
        result.events = reframe_sse(result.events, translator)
        return result
    if result.body is None:
        return result
    doc = _json_answer(result, "chat completion")
    usage = doc.get("usage")
    if ctx.usage is before and isinstance(usage, dict):
        ctx.usage = chat_usage(usage)
    result.body = orjson.dumps(chat_response_to_responses(doc, request=ctx.body))
    _json_content_type(result)
    return result


def _json_answer(result: ProviderResult, what: str) -> dict[str, Any]:
    """A complete answer's JSON object; anything else cannot be translated."""
    try:
        doc = orjson.loads(result.body or b"")
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise TranslationError(
            f"the provider answered HTTP {result.status} with a body that is not a JSON "
            f"{what}, so it cannot be translated for this client"
        )
    return doc


def _json_content_type(result: ProviderResult) -> None:
    result.headers = [(k, v) for k, v in result.headers if k.lower() != "content-type"]
    result.headers.append(("content-type", "application/json"))


#: Anthropic's error type for an HTTP status.
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_for_client(status: int, body: bytes, *, anthropic: bool) -> bytes:
    """An upstream error body in the other format's envelope (its message kept), so the
    client's SDK reads it; a body that is not a JSON error object is left as it is."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return body
    if not anthropic:
        return orjson.dumps({"error": error})
    kind = _ANTHROPIC_ERRORS.get(status, "api_error")
    message = error.get("message")
    return orjson.dumps(
        {"type": "error", "error": {"type": kind, "message": message or f"HTTP {status}"}}
    )


async def _send_as(
    provider: Provider,
    ctx: RequestContext,
    target: RouteTarget,
    http: UpstreamHTTP,
    native: str,
    body: dict[str, Any],
) -> ProviderResult:
    """Call the adapter with ``ctx`` seen as a native ``native`` request, then restore it."""
    saved = (
        ctx.endpoint,
        ctx.body,
        ctx.raw_body,
        ctx.path,
        ctx.query_string,
        ctx.headers,
        ctx._body_dirty,
        ctx._encoded,
    )
    foreign = _FOREIGN[ctx.endpoint]
    ctx.endpoint = native
    ctx.body = body
    ctx.raw_body = orjson.dumps(body)
    ctx.path = _PATHS[native]
    ctx.query_string = b""
    ctx.headers = _without(ctx.headers, foreign)
    ctx._body_dirty = False
    ctx._encoded = None
    try:
        if native in provider.translated:  # responses → chat, then the chat → messages lane
            return await send_via(provider, ctx, target, http)
        return await provider.send(ctx, target, http)
    finally:
        (
            ctx.endpoint,
            ctx.body,
            ctx.raw_body,
            ctx.path,
            ctx.query_string,
            ctx.headers,
            ctx._body_dirty,
            ctx._encoded,
        ) = saved


def _without(headers: Mapping[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if not k.lower().startswith(prefixes)}


def _translate_result(
    ctx: RequestContext, target: RouteTarget, native: str, result: ProviderResult
) -> ProviderResult:
    def on_usage(usage: Any) -> None:
        ctx.usage = usage

    if result.events is not None:
        if native == "chat":
            # An adapter may account usage on ctx.usage without a usage chunk (or read
            # stream_options lazily, after the client's body was restored): the client's
            # message_delta then takes ctx.usage rather than zeros.
            result.events = reframe_sse(
                result.events,
                ChatToMessagesStream(
                    model=target.model, on_usage=on_usage, fallback_usage=lambda: ctx.usage
                ),
            )
        else:
            options = ctx.body.get("stream_options")
            include = isinstance(options, dict) and options.get("include_usage") is True
            result.events = reframe_sse(
                result.events,
                MessagesToChatStream(include_usage=include, on_usage=on_usage, model=target.model),
            )
        return result
    if result.body is None:
        return result
    doc = _json_answer(result, "chat completion" if native == "chat" else "message")
    usage = doc.get("usage")
    if native == "chat":
        if ctx.usage is None and isinstance(usage, dict):
            ctx.usage = chat_usage(usage)
        out = chat_response_to_messages(doc)
    else:
        if ctx.usage is None and isinstance(usage, dict):
            ctx.usage = messages_usage(usage)
        out = messages_response_to_chat(doc)
    result.body = orjson.dumps(out)
    _json_content_type(result)
    return result
