"""The Gemini ``generateContent`` wire, shared by the Gemini API and Vertex AI adapters: OpenAI
chat and Anthropic messages clients, both by translation (the pure translators are
:mod:`tollway.wire.gemini_translate`).

:class:`GeminiWireProvider` is a :class:`~tollway.provider.Provider` base class; an adapter says
where a model's ``generateContent`` is (:meth:`~GeminiWireProvider.gemini_url`) and how to
authenticate (:meth:`~GeminiWireProvider.auth_headers`). Vertex AI also serves Claude models on
the Anthropic wire (:mod:`tollway.wire.anthropic`) from the same adapter, by overriding
:meth:`~tollway.provider.Provider.send` and calling :meth:`~GeminiWireProvider.send_gemini` for
the other models.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from tollway._context import RequestContext
from tollway._sse import event_fields
from tollway._types import RouteTarget
from tollway.config import ProviderConfig
from tollway.formats import (
    ChatToMessagesStream,
    StreamTranslator,
    TranslationError,
    chat_response_to_messages,
    messages_request_to_chat,
    reframe_sse,
    report_dropped,
)
from tollway.provider import (
    ModelIds,
    Provider,
    ProviderResult,
    UpstreamHTTP,
    forwardable_request_headers,
    raise_for_upstream_status,
    read_body,
    relay_sse,
    response_headers,
)
from tollway.wire.anthropic import estimated_count_tokens
from tollway.wire.gemini_translate import (
    ChainedStream,
    GeminiToChatStream,
    chat_request_to_gemini,
    gemini_response_to_chat,
    gemini_usage,
)

__all__ = ["GeminiWireProvider", "translate_request"]

#: Client headers that mean nothing to Google (the other SDKs' own protocol headers).
_FOREIGN_PREFIXES = ("openai-", "anthropic-")


def translate_request(ctx: RequestContext, model: str) -> tuple[dict[str, Any], list[str]]:
    """The ``GenerateContentRequest`` for the client's request (chat, or messages through the
    core's messages → chat translator), and the parameters left out."""
    dropped: list[str] = []
    if ctx.endpoint == "messages":
        chat, first = messages_request_to_chat(ctx.body, model=model, max_tokens_field="max_tokens")
        dropped = [d for d in first if d not in ("top_k", "thinking")]
        top_k = ctx.body.get("top_k")
        if top_k is not None:
            chat["top_k"] = top_k
    else:
        chat = dict(ctx.body)
    body, second = chat_request_to_gemini(chat)
    for name in second:
        if name not in dropped:
            dropped.append(name)
    if ctx.endpoint == "messages":
        thinking = ctx.body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if isinstance(budget, int):
                config = body.setdefault("generationConfig", {})
                config["thinkingConfig"] = {"thinkingBudget": budget}
        elif thinking is not None and not (
            isinstance(thinking, dict) and thinking.get("type") == "disabled"
        ):
            dropped.append("thinking")
    return body, dropped


class GeminiWireProvider(Provider):
    """A provider adapter for an upstream speaking ``generateContent``.

    Serves ``/v1/chat/completions`` and ``/v1/messages``, both by translation to
    ``generateContent`` / ``streamGenerateContent?alt=sse``. Subclasses set ``type`` and their
    defaults and implement :meth:`gemini_url` and :meth:`auth_headers`. ``config.model_ids``
    maps client model ids to the upstream's (checked by :attr:`model_ids`).
    """

    endpoints = frozenset({"chat", "messages", "gemini", "count_tokens"})
    #: Only the Google GenAI SDK's own wire (``/v1beta/models/{model}:generateContent``) is
    #: relayed byte-for-byte; chat and messages clients are translated.
    native_endpoints: ClassVar[frozenset[str] | None] = frozenset({"gemini"})

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        #: Client model id → the upstream's (``gemini-pro`` → ``gemini-2.5-pro``; on Vertex
        #: ``claude-sonnet-4-5`` → ``claude-sonnet-4-5@20250929``).
        self.model_ids = ModelIds(config, '{ "claude-sonnet-4-5" = "claude-sonnet-4-5@20250929" }')

    def serves(self, model: str) -> bool:
        return model in self.model_ids or super().serves(model)

    def models(self) -> list[str]:
        mapped = self.model_ids.map
        return [*mapped, *(m for m in super().models() if m not in mapped)]

    def validate(self) -> list[str]:
        """The ``config.model_ids`` problems (an override adds its own)."""
        return self.model_ids.problems()

    # --- the hooks an adapter implements ---------------------------------------------------

    def gemini_url(self, model: str, stream: bool) -> str:
        """The ``generateContent`` (``streamGenerateContent?alt=sse`` when ``stream``) URL for the
        upstream ``model``."""
        raise NotImplementedError

    async def auth_headers(self) -> dict[str, str]:
        """The upstream credential headers for one attempt."""
        raise NotImplementedError

    # --- the attempt -----------------------------------------------------------------------

    def _headers(self, ctx: RequestContext) -> dict[str, str]:
        headers = {
            k: v
            for k, v in forwardable_request_headers(ctx.headers.items()).items()
            if not k.startswith(_FOREIGN_PREFIXES)
        }
        headers["content-type"] = "application/json"
        return headers

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        if ctx.endpoint == "count_tokens":
            return estimated_count_tokens(ctx.body)
        return await self.send_gemini(ctx, target, http)

    async def send_gemini(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """One ``generateContent`` attempt, translated from and to the client's format (relayed
        as it is for a Gemini-native client)."""
        if ctx.endpoint == "gemini":
            return await self._send_native(ctx, target, http)
        body, dropped = translate_request(ctx, target.model)
        report_dropped(ctx, dropped)
        headers = self._headers(ctx)
        headers.update(await self.auth_headers())
        url = self.gemini_url(self.model_ids.upstream(target.model), ctx.stream)
        resp = await http.post(url, headers, orjson.dumps(body))
        await raise_for_upstream_status(resp)
        out_headers = response_headers(resp.headers.items())
        if ctx.stream and resp.headers.get("content-type", "").startswith("text/event-stream"):
            translator = self._stream_translator(ctx, target.model)
            events = reframe_sse(relay_sse(resp), translator)
            return ProviderResult(resp.status, out_headers, events=events, close=resp.close)
        data = await read_body(resp)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raise TranslationError(
                f"Gemini answered HTTP {resp.status} with a body that is not a JSON "
                "GenerateContentResponse, so it cannot be translated"
            )
        meta = doc.get("usageMetadata")
        if isinstance(meta, dict):
            ctx.usage = gemini_usage(meta)
        chat = gemini_response_to_chat(doc, model=target.model)
        answer = chat_response_to_messages(chat) if ctx.endpoint == "messages" else chat
        return ProviderResult(resp.status, _json_headers(out_headers), body=orjson.dumps(answer))

    async def _send_native(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """A Gemini-native request (the Google GenAI SDK's): the client's bytes to this
        upstream's ``generateContent`` / ``streamGenerateContent?alt=sse`` for the routed model,
        the answer relayed as it is; ``usageMetadata`` is read on the way (in a stream, the last
        one counts)."""
        payload = orjson.dumps(ctx.body) if ctx.body_modified else ctx.raw_body
        headers = self._headers(ctx)
        headers.update(await self.auth_headers())
        url = self.gemini_url(self.model_ids.upstream(target.model), ctx.stream)
        resp = await http.post(url, headers, payload)
        await raise_for_upstream_status(resp)
        out_headers = response_headers(resp.headers.items())
        if ctx.stream and resp.headers.get("content-type", "").startswith("text/event-stream"):
            events = relay_sse(resp, _usage_inspector(ctx), b'"usageMetadata"')
            return ProviderResult(resp.status, out_headers, events=events, close=resp.close)
        data = await read_body(resp)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        meta = doc.get("usageMetadata") if isinstance(doc, dict) else None
        if isinstance(meta, dict):
            ctx.usage = gemini_usage(meta)
        return ProviderResult(resp.status, out_headers, body=data)

    @staticmethod
    def _stream_translator(ctx: RequestContext, model: str) -> StreamTranslator:
        def on_usage(usage: Any) -> None:
            ctx.usage = usage

        if ctx.endpoint == "messages":
            return ChainedStream(
                GeminiToChatStream(model=model, include_usage=True, on_usage=on_usage),
                ChatToMessagesStream(model=model),
            )
        options = ctx.body.get("stream_options")
        return GeminiToChatStream(
            model=model,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            on_usage=on_usage,
        )


def _usage_inspector(ctx: RequestContext) -> Any:
    def inspect(event: bytes) -> bytes | None:
        _, data = event_fields(event)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        meta = doc.get("usageMetadata") if isinstance(doc, dict) else None
        if isinstance(meta, dict):
            ctx.usage = gemini_usage(meta)
        return None

    return inspect


def _json_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream headers with the content type of the translated JSON body."""
    out = [(k, v) for k, v in headers if k.lower() != "content-type"]
    out.append(("content-type", "application/json"))
    return out
