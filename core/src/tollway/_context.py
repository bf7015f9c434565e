"""The per-request context object and its typed stash."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Generic, TypeVar, cast, overload

import attrs
import orjson

from tollway._types import Attempt, Principal, RouteTarget, Usage

__all__ = ["Endpoint", "RequestContext", "Stash", "StashKey"]

T = TypeVar("T")
D = TypeVar("D")

#: The client-facing endpoints (and so the client's wire format).
Endpoint = str
CHAT = "chat"  # POST /v1/chat/completions (OpenAI chat)
MESSAGES = "messages"  # POST /v1/messages (Anthropic)
RESPONSES = "responses"  # POST /v1/responses (OpenAI Responses)
EMBEDDINGS = "embeddings"  # POST /v1/embeddings
MODELS = "models"  # GET /v1/models
COUNT_TOKENS = "count_tokens"  # POST /v1/messages/count_tokens (Anthropic)
MODERATIONS = "moderations"  # POST /v1/moderations
IMAGES = "images"  # POST /v1/images/generations
SPEECH = "speech"  # POST /v1/audio/speech
TRANSCRIPTIONS = "transcriptions"  # POST /v1/audio/transcriptions (multipart)
REALTIME_SECRETS = "realtime_client_secrets"  # POST /v1/realtime/client_secrets
#: POST /v1beta/models/{model}:generateContent and :streamGenerateContent (Gemini's own wire)
GEMINI = "gemini"
#: GET/DELETE /v1/responses/{id}, POST …/cancel, GET …/input_items
STORED_RESPONSES = "stored_responses"
#: The endpoints whose errors carry Anthropic's envelope.
ANTHROPIC_ENDPOINTS = frozenset({MESSAGES, COUNT_TOKENS})


class StashKey(Generic[T]):
    """A typed key for :class:`Stash`. Create one per plugin at module level."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})"


class Stash:
    """Private, typed per-plugin state on a shared object (after pytest's ``Stash``)."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], Any] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._data[key])

    @overload
    def get(self, key: StashKey[T]) -> T | None: ...
    @overload
    def get(self, key: StashKey[T], default: D) -> T | D: ...
    def get(self, key: StashKey[T], default: object = None) -> object:
        return self._data.get(key, default)

    def setdefault(self, key: StashKey[T], default: T) -> T:
        return cast(T, self._data.setdefault(key, default))

    def __contains__(self, key: StashKey[Any]) -> bool:
        return key in self._data

    def __delitem__(self, key: StashKey[Any]) -> None:
        del self._data[key]

    def __len__(self) -> int:
        return len(self._data)


@attrs.define(slots=True, eq=False)
class RequestContext:
    """Everything one request carries through the hooks.

    The context owns the model: :attr:`model` is what the request is for (the client's
    ``body["model"]`` until a plugin assigns another, an alias for example), and the body sent
    upstream carries the model of the provider attempt (:meth:`body_bytes`). The raw body is
    forwarded byte-for-byte unless a hook calls :meth:`set_body` or the model changed.
    """

    request_id: str
    endpoint: Endpoint
    method: str
    path: str
    query_string: bytes
    headers: Mapping[str, str]
    trace_id: str
    span_id: str
    #: The :class:`tollway.gateway.Gateway` serving this request (settings, ``stash``).
    gateway: Any = None
    parent_span_id: str | None = None
    trace_flags: int = 1
    raw_body: bytes = b""
    body: dict[str, Any] = attrs.field(factory=dict)
    _model: str = attrs.field(default="", alias="model")
    stream: bool = False
    principal: Principal | None = None
    #: Headers any hook wants on the client response (budget warnings, rate-limit headroom, …).
    response_headers: dict[str, str] = attrs.field(factory=dict)
    targets: list[RouteTarget] = attrs.field(factory=list)
    attempts: list[Attempt] = attrs.field(factory=list)
    provider: str | None = None
    provider_type: str | None = None
    resolved_model: str | None = None
    usage: Usage | None = None
    status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    stream_chunks: int = 0
    terminated_at_chunk: int | None = None
    client_disconnected: bool = False
    #: ``time.perf_counter()`` at arrival, and wall-clock ns for spans.
    started: float = attrs.field(factory=time.perf_counter)
    started_unix_ns: int = attrs.field(factory=time.time_ns)
    finished: float | None = None
    #: Seconds spent waiting on upstreams (for ``gateway_overhead_seconds``).
    upstream_wait_s: float = 0.0
    first_byte_at: float | None = None
    stash: Stash = attrs.field(factory=Stash)
    #: Cost of the call in micro-USD once a pricing plugin settled it (for spans and logs).
    cost_micros: int | None = None
    #: Extra span attributes any plugin wants on the request's span (``langwatch.guardrail.*``,
    #: ``langwatch.budget.decision``, …). Values: str, int, float or bool.
    span_attributes: dict[str, Any] = attrs.field(factory=dict)
    #: Per-request stream listeners, same contract as ``on_stream_chunk`` (sync, in place).
    #: A plugin appends one only for the requests it cares about, so streams of other requests
    #: pay no per-chunk dispatch (``on_stream_chunk`` runs for every stream).
    stream_listeners: list[Any] = attrs.field(factory=list)
    #: Per-request :class:`tollway.StreamFilter` objects, awaited for each chunk after the
    #: listeners: they may wait (within their own budget) and hold bytes back. Only requests
    #: with a filter pay for it.
    stream_filters: list[Any] = attrs.field(factory=list)
    #: Guardrail decisions: (direction ``pre``/``post``/``stream_chunk``, plugin, verdict).
    verdicts: list[tuple[str, str, Any]] = attrs.field(factory=list)
    #: Every attempt failed and the gateway answers with its own error (see fallback_count).
    attempts_exhausted: bool = False
    #: The plugin whose ``answer`` hook answered the request (no provider was called), or None.
    answered_by: str | None = None
    #: The provider key (:attr:`tollway.config.ProviderConfig.key`) this request counts as in
    #: flight to (:class:`tollway.routing.LiveStats`) until it is settled, or None.
    in_flight_to: str | None = None
    #: The id of the response a Responses API call stored upstream (set by the adapter), so
    #: ``/v1/responses/{id}`` reaches the provider that holds it.
    stored_response_id: str | None = None
    _body_dirty: bool = False
    #: The last re-serialisation: (model it carries, bytes).
    _encoded: tuple[str, bytes] | None = None

    @property
    def model(self) -> str:
        """The model this request is for; the router and the providers read it.

        Assign it to change the model (``ctx.model = "gpt-4o"``, what an alias does): that is
        the one place it changes. The body is not touched; the model is written into the bytes
        sent upstream once, when a provider is called (:meth:`body_bytes`), and only when it
        differs from the body's. ``ctx.body["model"]`` keeps what the client sent.
        """
        return self._model

    @model.setter
    def model(self, value: str) -> None:
        self._model = value

    @property
    def fallback_count(self) -> int:
        """``X-LangWatch-Fallback-Count``: provider attempts that failed before the one whose
        answer the client got (a success, or an upstream error passed through as it is): 0 means
        the first provider tried answered. When every attempt failed and the gateway answers
        with its own error (502/504), it is the number of attempts made. Entries skipped without
        an attempt (open breaker, provider rate limit) never count."""
        made = sum(1 for a in self.attempts if a.outcome in ("ok", "error"))
        return made if self.attempts_exhausted else max(0, made - 1)

    def set_body(self, body: dict[str, Any]) -> None:
        """Replace the parsed body; the upstream then receives its re-serialisation.

        Change the model with ``ctx.model = …``, not through the body. (For plugins written
        before the context owned the model: a ``body["model"]`` that differs from the current
        body's is taken as ``ctx.model`` too.)
        """
        model = body.get("model")
        if isinstance(model, str) and model and model != self.body.get("model"):
            self._model = model
        self.body = body
        self._body_dirty = True
        self._encoded = None

    @property
    def body_modified(self) -> bool:
        """True when a hook rewrote the body (it is no longer forwarded byte-for-byte)."""
        return self._body_dirty

    async def flush_deferred(self) -> None:
        """Send the Redis calls plugins deferred for this request (:mod:`tollway.redis_batch`)
        now, and raise the first refusal their continuations decided. The core does this at its
        flush point anyway (after ``answer``, before the upstream); a plugin calls it before
        costly work — a guardrail evaluator that calls a service — so that a request admission
        refuses (rate limited, over budget) costs nothing more. A no-op when nothing waits."""
        await flush_deferred(self)

    def body_bytes(self, model: str | None = None) -> bytes:
        """The bytes to send upstream, carrying ``model``.

        ``model`` defaults to the current provider attempt's (:attr:`resolved_model`, which the
        core sets to the route target's model before calling the provider), else
        :attr:`model`; an adapter passes ``target.model``. The result is the client's own bytes
        unless a hook rewrote the body or ``model`` differs from the body's; a
        re-serialisation is made once per model and reused.
        """
        if model is None:
            model = self.resolved_model or self._model
        body = self.body
        same_model = model == body.get("model")
        if same_model and not self._body_dirty:
            return self.raw_body
        encoded = self._encoded
        if encoded is not None and encoded[0] == model:
            return encoded[1]
        data = orjson.dumps(body if same_model or not model else {**body, "model": model})
        self._encoded = (model, data)
        return data

    @property
    def is_anthropic_client(self) -> bool:
        """Whether errors should carry the Anthropic top-level ``"type":"error"``."""
        return self.endpoint in ANTHROPIC_ENDPOINTS


#: The request's Redis batch (:mod:`tollway.redis_batch`), when a plugin deferred a call: the
#: core flushes it (:func:`flush_deferred`) without importing Redis itself.
DEFERRED: StashKey[Any] = StashKey("tollway.redis_batch")


async def flush_deferred(ctx: RequestContext) -> None:
    """Send the request's deferred Redis calls, if any, and raise the first refusal."""
    batch = ctx.stash.get(DEFERRED)
    if batch is not None and batch.pending:
        await batch.flush()
