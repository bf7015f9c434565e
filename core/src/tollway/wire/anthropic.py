"""The Anthropic Messages wire, shared by every adapter that reaches Claude's Messages API
(Anthropic's own, Claude on Vertex AI): ``/v1/messages`` relayed as it arrives, and OpenAI
``/v1/chat/completions`` clients translated.

- :class:`AnthropicWireProvider`: a :class:`~tollway.provider.Provider` base class for an
  upstream at ``{base_url}/v1/messages`` (hooks :meth:`~AnthropicWireProvider.messages_url`,
  :meth:`~AnthropicWireProvider.auth_headers`).
- For an adapter that reaches the Messages wire another way (a different URL scheme, the model
  in the URL, a body rewrite): :func:`claude_sampling` (which sampling parameters a Claude model
  takes), :func:`chat_to_messages_body` (a chat client's request as a Messages body, dropped
  parameters reported) and :func:`messages_answer` (post, then the answer relayed to a Messages
  client or translated for a chat client, usage read on the way), built on
  :func:`messages_result`, :func:`messages_to_chat_result` and
  :func:`messages_usage_inspector`. Usage accounting and translation stay the same whichever
  provider serves Claude.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import aiohttp
import orjson

from tollway._context import RequestContext
from tollway._sse import event_fields
from tollway._types import RouteTarget
from tollway.formats import (
    MessagesToChatStream,
    Sampling,
    TranslationError,
    chat_request_to_messages,
    forget_dropped,
    messages_response_to_chat,
    messages_usage,
    reframe_sse,
    report_dropped,
)
from tollway.provider import (
    Provider,
    ProviderResult,
    UpstreamHTTP,
    forwardable_request_headers,
    raise_for_upstream_status,
    read_body,
    relay_sse,
    response_headers,
    upstream_url,
)
from tollway.routing import default_max_tokens

__all__ = [
    "DEFAULT_VERSION",
    "SAMPLING_REMOVED_VERSION",
    "SAMPLING_VALUES",
    "AnthropicWireProvider",
    "chat_to_messages_body",
    "claude_sampling",
    "messages_answer",
    "messages_result",
    "messages_to_chat_result",
    "messages_usage",
    "messages_usage_inspector",
]

DEFAULT_VERSION = "2023-06-01"
#: The first ``anthropic-version`` seen without sampling parameters: the anthropic SDK 2.12 sends
#: it, and its Messages API has no ``temperature``/``top_p``/``top_k`` any more. From this
#: version on, translated requests leave them out (and report them dropped).
SAMPLING_REMOVED_VERSION = "2026-10-21"
#: ``config.sampling_params`` values: which of temperature/top_p/top_k the models accept.
SAMPLING_VALUES = ("all", "one", "none")
# claude-opus-4-7, claude-sonnet-4-5-20250929, claude-haiku-4-5 …
_NEW_STYLE = re.compile(r"claude-(?:opus|sonnet|haiku)-(\d+)(?:-(\d{1,2}))?(?![0-9])")
# claude-3-5-sonnet-20241022, claude-3-opus-20240229 …
_OLD_STYLE = re.compile(r"claude-(\d+)(?:-(\d))?-(?:opus|sonnet|haiku)")


def claude_sampling(model: str) -> Sampling:
    """Which sampling parameters a Claude model accepts, from its id.

    Claude Opus 4.7 and later reject ``temperature``, ``top_p`` and ``top_k`` outright; the 4.1
    to 4.6 generation (Opus 4.1, Sonnet 4.5/4.6, Haiku 4.5, …) rejects ``temperature`` and
    ``top_p`` together; earlier models take all three. Unknown ids are assumed to take them all
    (set ``sampling_params`` in the provider's ``config`` to override).
    """
    match = _NEW_STYLE.search(model)
    if match is None:
        match = _OLD_STYLE.search(model)
    if match is None:
        return "all"
    version = (int(match.group(1)), int(match.group(2) or 0))
    if version >= (4, 7):
        return "none"
    if version >= (4, 1):
        return "one"
    return "all"


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


def chat_to_messages_body(
    ctx: RequestContext,
    *,
    model: str,
    sampling: Sampling,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Messages body for an OpenAI chat client's request (``ctx.body``), with the parameters
    left out reported in ``X-LangWatch-Params-Dropped``.

    ``sampling``: what the model accepts (e.g. :func:`claude_sampling`); ``config``: the
    provider's ``config`` table. A chat request without ``max_tokens`` gets
    :func:`tollway.routing.default_max_tokens` (reported in ``X-LangWatch-Default-Max-Tokens``).
    """
    body = ctx.body
    default_max = None
    if body.get("max_completion_tokens") is None and body.get("max_tokens") is None:
        default_max = default_max_tokens(ctx, model, config)
    body, dropped = chat_request_to_messages(
        body,
        model=model,
        sampling=sampling,
        default_max_tokens=default_max,
    )
    report_dropped(ctx, dropped)
    return body


async def messages_answer(
    ctx: RequestContext,
    http: UpstreamHTTP,
    url: str,
    headers: dict[str, str],
    payload: bytes,
    *,
    model: str,
    upstream: str,
    set_model: bool = False,
) -> ProviderResult:
    """Post a Messages request and return the answer in the client's format.

    Upstream errors raise (:func:`~tollway.provider.raise_for_upstream_status`); a Messages
    client (``ctx.endpoint == "messages"``) gets :func:`messages_result`, a chat client
    :func:`messages_to_chat_result` (``model``, ``upstream`` and ``set_model`` as there).
    """
    resp = await http.post(url, headers, payload)
    await raise_for_upstream_status(resp)
    if ctx.endpoint == "messages":
        return await messages_result(ctx, resp)
    return await messages_to_chat_result(
        ctx, resp, model=model, upstream=upstream, set_model=set_model
    )


class AnthropicWireProvider(Provider):
    """A provider adapter for an upstream speaking the Messages API at ``{base_url}/v1/messages``
    with an ``x-api-key``.

    Serves ``/v1/messages`` natively (byte-for-byte) and ``/v1/chat/completions`` by translation
    (OpenAI chat in, OpenAI chat out; see ``docs/translation.md``). Subclasses set ``type`` and
    their defaults and may override :meth:`messages_url` and :meth:`auth_headers`.
    ``config.sampling_params`` and ``config.default_max_tokens`` are checked by :meth:`validate`.
    """

    endpoints = frozenset({"messages", "chat"})
    #: Client endpoints that speak this provider's own wire format (relayed byte-for-byte).
    native_endpoints: ClassVar[frozenset[str] | None] = frozenset({"messages"})

    def validate(self) -> list[str]:
        problems = []
        sampling = self.config.config.get("sampling_params")
        if sampling is not None and sampling not in SAMPLING_VALUES:
            problems.append(
                f"config.sampling_params: {sampling!r} is not one of all, one, none "
                "(which of temperature/top_p/top_k the models accept)"
            )
        default = self.config.config.get("default_max_tokens")
        if default is not None and (
            isinstance(default, bool) or not isinstance(default, int) or default < 1
        ):
            problems.append(
                f"config.default_max_tokens: {default!r} must be a positive integer (the "
                "max_tokens sent for translated chat requests that carry none)"
            )
        return problems

    def sampling_for(self, model: str, version: str = DEFAULT_VERSION) -> Sampling:
        """The sampling parameters ``model`` accepts when called with ``anthropic-version``
        ``version``: the config's ``sampling_params`` wins; then versions from
        :data:`SAMPLING_REMOVED_VERSION` on take none; then the model family decides."""
        configured = self.config.config.get("sampling_params")
        if configured in SAMPLING_VALUES:
            return configured  # type: ignore[no-any-return]
        if version >= SAMPLING_REMOVED_VERSION:
            return "none"
        return claude_sampling(model)

    # --- the hooks an adapter overrides -------------------------------------------------

    def messages_url(self, query_string: bytes) -> str:
        """The Messages endpoint (``query_string``: the client's, empty on translated calls)."""
        return upstream_url(self.base_url, "/v1/messages", query_string)

    def auth_headers(self) -> dict[str, str]:
        """The upstream credential's headers (default: ``x-api-key``)."""
        return {"x-api-key": self.api_key}

    # --- the wire -------------------------------------------------------------------------

    def _headers(self, ctx: RequestContext, *, translated: bool = False) -> dict[str, str]:
        headers = forwardable_request_headers(ctx.headers.items())
        if translated:
            # An OpenAI client's own headers mean nothing to Anthropic.
            headers = {k: v for k, v in headers.items() if not k.startswith("openai-")}
        headers.update(self.auth_headers())
        headers["content-type"] = "application/json"
        if "anthropic-version" not in headers:
            headers["anthropic-version"] = str(
                self.config.config.get("anthropic_version", DEFAULT_VERSION)
            )
        return headers

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        if ctx.endpoint not in self.native:
            return await self._send_chat(ctx, target, http)
        forget_dropped(ctx)
        url = self.messages_url(ctx.query_string)
        payload = ctx.body_bytes(target.model)
        return await messages_answer(
            ctx, http, url, self._headers(ctx), payload, model=target.model, upstream="Anthropic"
        )

    async def _send_chat(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """An OpenAI chat request, translated to Messages and back."""
        headers = self._headers(ctx, translated=True)
        body = chat_to_messages_body(
            ctx,
            model=target.model,
            sampling=self.sampling_for(target.model, headers["anthropic-version"]),
            config=self.config.config,
        )
        return await messages_answer(
            ctx,
            http,
            self.messages_url(b""),
            headers,
            orjson.dumps(body),
            model=target.model,
            upstream="the Anthropic upstream",
        )
