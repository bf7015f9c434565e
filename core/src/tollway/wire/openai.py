"""The OpenAI wire, shared by every adapter that speaks it (OpenAI, OpenAI-compatible servers,
Azure OpenAI): chat completions, responses and embeddings relayed as they arrive, and
``/v1/messages`` (Anthropic clients) translated to chat completions.

An adapter subclasses :class:`OpenAIWireProvider`, sets the :class:`~tollway.provider.Provider`
class attributes (``type``, ``default_base_url``, ``default_models``, …) and overrides the hooks
where its upstream differs: :meth:`~OpenAIWireProvider.endpoint_url` (where a request goes),
:meth:`~OpenAIWireProvider.auth_headers` (how it authenticates) and
:meth:`~OpenAIWireProvider.request_body` (the bytes of a native request). Everything else —
byte-for-byte relay, ``stream_options.include_usage`` injection, usage accounting, the
Messages translation — is this module's, so it stays the same for every OpenAI-wire upstream.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from tollway import RequestContext, RouteTarget, Usage
from tollway._sse import event_fields
from tollway.formats import (
    ChatToMessagesStream,
    Sampling,
    TranslationError,
    chat_response_to_messages,
    chat_usage,
    forget_dropped,
    messages_request_to_chat,
    reframe_sse,
    report_dropped,
    responses_usage,
)
from tollway.media import UPLOAD, form_body, relay_bytes, transcription_usage
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
from tollway.wire.anthropic import estimated_count_tokens

__all__ = [
    "MAX_TOKENS_FIELDS",
    "SAMPLING_VALUES",
    "OpenAIWireProvider",
    "chat_usage",
    "inject_include_usage",
    "is_reasoning_model",
    "responses_usage",
]

_SUFFIX = {
    "chat": "/chat/completions",
    "responses": "/responses",
    "embeddings": "/embeddings",
    "moderations": "/moderations",
    "images": "/images/generations",
}
_INCLUDE_USAGE = b'"stream_options":{"include_usage":true},'
#: Where a translated Anthropic ``max_tokens`` may go (``config.max_tokens_field``).
MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")
#: ``config.sampling_params`` values: whether the models take temperature/top_p/stop.
SAMPLING_VALUES = ("all", "none")
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def is_reasoning_model(model: str) -> bool:
    """OpenAI reasoning models (o-series, gpt-5*) reject ``temperature``, ``top_p`` and ``stop``.

    ``gpt-5-chat*`` is the non-reasoning chat model and takes them.
    """
    return model.startswith(_REASONING_PREFIXES) and not model.startswith("gpt-5-chat")


def _has_usage_object(event: bytes) -> bool:
    """True when the event carries ``"usage": {...}`` (not ``"usage": null``)."""
    i = event.find(b'"usage"')
    while i != -1:
        j = i + 7
        while j < len(event) and event[j] in b" \t:":
            j += 1
        if j < len(event) and event[j : j + 1] == b"{":
            return True
        i = event.find(b'"usage"', j)
    return False


def inject_include_usage(body: dict[str, Any], raw: bytes) -> bytes | None:
    """The request bytes with ``stream_options.include_usage`` on, or None when already on.

    When ``stream_options`` is absent the key is spliced in front of the raw bytes (no
    re-serialisation of a large body); otherwise the body is re-encoded.
    """
    opts = body.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage") is True:
        return None
    if opts is None and "stream_options" not in body:
        start = raw.find(b"{")
        return raw[: start + 1] + _INCLUDE_USAGE + raw[start + 1 :]
    new = dict(body)
    new["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
    return orjson.dumps(new)


def _note_stored(ctx: RequestContext, response: dict[str, Any]) -> None:
    """Remember the id of a response the upstream stored (``store`` is on unless false)."""
    response_id = response.get("id")
    if isinstance(response_id, str) and response.get("store") is not False:
        ctx.stored_response_id = response_id


class OpenAIWireProvider(Provider):
    """A provider adapter for an upstream speaking the OpenAI wire: chat, responses, embeddings
    natively, and ``/v1/messages`` by translation to chat completions (see
    ``docs/translation.md``).

    Subclasses set ``type`` and their defaults, and override :meth:`endpoint_url`,
    :meth:`auth_headers` and :meth:`request_body` where their upstream differs from OpenAI's.
    ``config.max_tokens_field`` and ``config.sampling_params`` are checked by :meth:`validate`
    (call it from an override).
    """

    endpoints = frozenset(
        {
            "chat",
            "responses",
            "embeddings",
            "messages",
            "count_tokens",
            "moderations",
            "images",
            "speech",
            "transcriptions",
            "stored_responses",
            "realtime_client_secrets",
        }
    )
    #: Client endpoints that speak this provider's own wire formats (relayed byte-for-byte).
    native_endpoints: ClassVar[frozenset[str] | None] = frozenset(
        {"chat", "responses", "embeddings", "moderations", "images"}
    )
    #: Where a translated Anthropic ``max_tokens`` goes (OpenAI deprecated ``max_tokens`` for
    #: ``max_completion_tokens``, the only one its reasoning models accept).
    default_max_tokens_field: ClassVar[str] = "max_completion_tokens"
    #: Model ids follow OpenAI's names, so reasoning models (:func:`is_reasoning_model`) lose
    #: the sampling parameters they reject on translated calls.
    openai_model_names: ClassVar[bool] = True

    def validate(self) -> list[str]:
        problems = []
        field = self.config.config.get("max_tokens_field")
        if field is not None and field not in MAX_TOKENS_FIELDS:
            problems.append(
                f"config.max_tokens_field: {field!r} is not one of max_completion_tokens, "
                "max_tokens (where a translated Anthropic request's max_tokens is sent)"
            )
        sampling = self.config.config.get("sampling_params")
        if sampling is not None and sampling not in SAMPLING_VALUES:
            problems.append(
                f"config.sampling_params: {sampling!r} is not one of all, none (whether the "
                "models accept temperature/top_p/stop)"
            )
        return problems

    # --- the hooks an adapter overrides -------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """The upstream credential's headers (default: ``Authorization: Bearer <api_key>``)."""
        return {"authorization": f"Bearer {self.api_key}"}

    def endpoint_url(self, endpoint: str, target: RouteTarget, query_string: bytes) -> str:
        """The upstream URL for a native ``endpoint`` (``"chat"`` also serves translated calls,
        with an empty ``query_string``). Default: :attr:`base_url` plus the OpenAI path."""
        return upstream_url(self.base_url, _SUFFIX[endpoint], query_string)

    def request_body(self, ctx: RequestContext, target: RouteTarget) -> bytes:
        """The bytes of a native request: the client's own, unless routing changed the model
        (then re-serialised once per model by :meth:`RequestContext.body_bytes`)."""
        return ctx.body_bytes(target.model)

    # --- the wire -------------------------------------------------------------------------

    def _headers(self, ctx: RequestContext, *, translated: bool = False) -> dict[str, str]:
        headers = forwardable_request_headers(ctx.headers.items())
        if translated:
            # An Anthropic client's own headers (anthropic-version, -beta) mean nothing here.
            headers = {k: v for k, v in headers.items() if not k.startswith("anthropic-")}
        headers.update(self.auth_headers())
        headers["content-type"] = "application/json"
        return headers

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        endpoint = ctx.endpoint
        if endpoint not in self.native:
            if endpoint == "count_tokens":
                return estimated_count_tokens(ctx.body)
            if endpoint == "speech":
                return await self._send_speech(ctx, target, http)
            if endpoint == "transcriptions":
                return await self._send_transcription(ctx, target, http)
            if endpoint == "stored_responses":
                return await self._send_stored(ctx, http)
            if endpoint == "realtime_client_secrets":
                return await self._send_realtime_secret(ctx, target, http)
            return await self._send_messages(ctx, target, http)
        forget_dropped(ctx)
        url = self.endpoint_url(endpoint, target, ctx.query_string)
        body = self.request_body(ctx, target)
        injected = False
        if endpoint == "chat" and ctx.stream:
            spliced = inject_include_usage(ctx.body, body)
            if spliced is not None:
                body, injected = spliced, True
        resp = await http.post(url, self._headers(ctx), body)
        await raise_for_upstream_status(resp)
        headers = response_headers(resp.headers.items())
        content_type = resp.headers.get("content-type", "")
        if ctx.stream and content_type.startswith("text/event-stream"):
            if endpoint == "chat":
                events = relay_sse(resp, self._chat_inspector(ctx, injected), b'"usage"')
            else:
                events = relay_sse(resp, self._responses_inspector(ctx), b"response.completed")
            return ProviderResult(resp.status, headers, events=events, close=resp.close)
        data = await read_body(resp)
        self._usage_from_body(ctx, data)
        return ProviderResult(resp.status, headers, body=data)

    async def _send_speech(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """``/v1/audio/speech``: the audio relayed as it arrives, with the upstream's content
        type; priced by the characters of ``input`` (and their tokens, for token-priced
        voices)."""
        url = upstream_url(self.base_url, "/audio/speech", ctx.query_string)
        resp = await http.post(url, self._headers(ctx), self.request_body(ctx, target))
        await raise_for_upstream_status(resp)
        text = ctx.body.get("input")
        chars = len(text) if isinstance(text, str) else 0
        ctx.usage = Usage(input_tokens=-(-chars // 4), characters=chars)
        headers = response_headers(resp.headers.items())
        return ProviderResult(resp.status, headers, events=relay_bytes(resp), close=resp.close)

    async def _send_transcription(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """``/v1/audio/transcriptions``: the form rebuilt with the documented fields only;
        priced by the seconds of audio (or the tokens) the answer reports."""
        body, content_type = await form_body(ctx.body, ctx.stash[UPLOAD], model=target.model)
        headers = self._headers(ctx)
        headers["content-type"] = content_type
        url = upstream_url(self.base_url, "/audio/transcriptions", ctx.query_string)
        resp = await http.post(url, headers, body)
        await raise_for_upstream_status(resp)
        data = await read_body(resp)
        ctx.usage = transcription_usage(data)
        return ProviderResult(resp.status, response_headers(resp.headers.items()), body=data)

    async def _send_stored(self, ctx: RequestContext, http: UpstreamHTTP) -> ProviderResult:
        """``/v1/responses/{id}`` (retrieve, delete), ``…/cancel``, ``…/input_items``: the
        same path and query at this upstream; a retrieve with ``stream=true`` is relayed as
        events. Nothing to price."""
        suffix = ctx.path.removeprefix("/v1")
        url = upstream_url(self.base_url, suffix, ctx.query_string)
        headers = self._headers(ctx)
        body: bytes | None = None
        if ctx.method == "POST":
            body = b"{}"
        else:
            headers.pop("content-type", None)
        resp = await http.request(ctx.method, url, headers, body)
        await raise_for_upstream_status(resp)
        out = response_headers(resp.headers.items())
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            return ProviderResult(resp.status, out, events=relay_sse(resp), close=resp.close)
        return ProviderResult(resp.status, out, body=await read_body(resp))

    async def _send_realtime_secret(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """``/v1/realtime/client_secrets``: an ephemeral secret minted upstream for the routed
        model (``session.model``); the session it opens is billed upstream, not here."""
        body = ctx.raw_body
        session = ctx.body["session"]
        if ctx.body_modified or session.get("model") != target.model:
            body = orjson.dumps({**ctx.body, "session": {**session, "model": target.model}})
        url = upstream_url(self.base_url, "/realtime/client_secrets", ctx.query_string)
        resp = await http.post(url, self._headers(ctx), body)
        await raise_for_upstream_status(resp)
        return ProviderResult(
            resp.status, response_headers(resp.headers.items()), body=await read_body(resp)
        )

    def _sampling(self, model: str) -> tuple[Sampling, bool]:
        """(sampling parameters accepted, whether ``stop`` is accepted) for ``model``."""
        configured = self.config.config.get("sampling_params")
        if configured in SAMPLING_VALUES:
            return configured, configured == "all"
        if self.openai_model_names and is_reasoning_model(model):
            return "none", False
        return "all", True

    async def _send_messages(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """An Anthropic Messages request, translated to chat completions and back."""
        sampling, allow_stop = self._sampling(target.model)
        field = self.config.config.get("max_tokens_field")
        body, dropped = messages_request_to_chat(
            ctx.body,
            model=target.model,
            max_tokens_field=field if field in MAX_TOKENS_FIELDS else self.default_max_tokens_field,
            sampling=sampling,
            allow_stop=allow_stop,
        )
        report_dropped(ctx, dropped)
        url = self.endpoint_url("chat", target, b"")
        resp = await http.post(url, self._headers(ctx, translated=True), orjson.dumps(body))
        await raise_for_upstream_status(resp)
        headers = response_headers(resp.headers.items())
        if ctx.stream and resp.headers.get("content-type", "").startswith("text/event-stream"):
            translator = ChatToMessagesStream(
                model=target.model, on_usage=lambda usage: setattr(ctx, "usage", usage)
            )
            events = reframe_sse(relay_sse(resp), translator)
            return ProviderResult(resp.status, headers, events=events, close=resp.close)
        data = await read_body(resp)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raise TranslationError(
                f"the OpenAI upstream answered HTTP {resp.status} with a body that is not a JSON "
                "chat completion, so it cannot be translated to a message"
            )
        if isinstance(doc.get("usage"), dict):
            ctx.usage = chat_usage(doc["usage"])
        return ProviderResult(
            resp.status, headers, body=orjson.dumps(chat_response_to_messages(doc))
        )

    @staticmethod
    def _usage_from_body(ctx: RequestContext, data: bytes) -> None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        usage = doc.get("usage") if isinstance(doc, dict) else None
        if not isinstance(usage, dict):
            if ctx.endpoint == "images" and isinstance(doc, dict):
                # DALL·E reports no usage: priced per image generated.
                images = doc.get("data")
                ctx.usage = Usage(images=len(images) if isinstance(images, list) else 0)
            return
        if ctx.endpoint in ("responses", "images"):
            ctx.usage = responses_usage(usage)
            if ctx.endpoint == "responses":
                _note_stored(ctx, doc)
        elif ctx.endpoint == "embeddings":
            ctx.usage = Usage(input_tokens=int(usage.get("prompt_tokens") or 0))
        else:
            ctx.usage = chat_usage(usage)

    @staticmethod
    def _chat_inspector(ctx: RequestContext, injected: bool) -> Any:
        def inspect(event: bytes) -> bytes | None:
            if not _has_usage_object(event):
                return None
            _, data = event_fields(event)
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                return None
            usage = doc.get("usage") if isinstance(doc, dict) else None
            if isinstance(usage, dict):
                ctx.usage = chat_usage(usage)
                # The usage-only chunk exists because we asked for it: the client did not.
                if injected and doc.get("choices") == []:
                    return b""
            return None

        return inspect

    @staticmethod
    def _responses_inspector(ctx: RequestContext) -> Any:
        def inspect(event: bytes) -> bytes | None:
            _, data = event_fields(event)
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                return None
            if not isinstance(doc, dict) or doc.get("type") != "response.completed":
                return None
            response = doc.get("response")
            if isinstance(response, dict):
                _note_stored(ctx, response)
            usage = (doc.get("response") or {}).get("usage")
            if isinstance(usage, dict):
                ctx.usage = responses_usage(usage)
            return None

        return inspect
