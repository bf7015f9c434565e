"""A request's intake: context, key, body (pipeline steps 1 to 5)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from tollway._body import BadEncoding, BodyReader, BodyTooLarge, decode_body
from tollway._context import (
    CHAT,
    COUNT_TOKENS,
    EMBEDDINGS,
    GEMINI,
    IMAGES,
    MESSAGES,
    MODERATIONS,
    REALTIME_SECRETS,
    RESPONSES,
    SPEECH,
    TRANSCRIPTIONS,
    RequestContext,
)
from tollway._errors import (
    BadRequest,
    InvalidAPIKey,
    PayloadTooLarge,
)
from tollway._ids import new_span_id, new_trace_id, parse_traceparent, request_id
from tollway._input import (
    duplicate_key,
    model_problem,
    quote_input,
)
from tollway._types import Credential
from tollway.formats.shapes import PARAMS_DROPPED_HEADER, dropped_header_value
from tollway.keys import KeyFormatError, check_key_format
from tollway.media import UPLOAD, FormError, parse_form

if TYPE_CHECKING:
    from tollway._hooks import Hooks

__all__ = ["ENDPOINT_PATHS", "Intake"]

log = logging.getLogger("tollway.gateway")


_KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_REQUIRED: dict[str, tuple[str, ...]] = {
    CHAT: ("model", "messages"),
    MESSAGES: ("model", "messages"),
    RESPONSES: ("model",),
    EMBEDDINGS: ("model", "input"),
    COUNT_TOKENS: ("model", "messages"),
    MODERATIONS: ("input",),
    IMAGES: ("model", "prompt"),
    SPEECH: ("model", "input"),
    TRANSCRIPTIONS: ("model",),
    REALTIME_SECRETS: ("session",),
    GEMINI: ("contents",),
}
#: Gemini's methods on ``/v1beta/models/{model}:{method}``, and whether each streams.
GEMINI_METHODS = {"generateContent": False, "streamGenerateContent": True}
#: The model a request of these endpoints is for when its body names none (OpenAI's default).
_DEFAULT_MODEL = {MODERATIONS: "omni-moderation-latest"}
#: Endpoints whose body is not the gateway-wide cap's: transcriptions carry audio (the
#: reference's 26 MiB).
TRANSCRIPTION_MAX_BYTES = 26 * 1024 * 1024
#: A realtime client secret's request is a session configuration: small.
REALTIME_SECRETS_MAX_BYTES = 64 * 1024
_BODY_CAPS = {
    TRANSCRIPTIONS: TRANSCRIPTION_MAX_BYTES,
    REALTIME_SECRETS: REALTIME_SECRETS_MAX_BYTES,
}
#: OpenAI's limit on the text of one speech request.
SPEECH_MAX_CHARS = 4096
#: The endpoints whose ``"stream": true`` makes the answer a stream of events.
_STREAMING = frozenset({CHAT, MESSAGES, RESPONSES})
#: The endpoints whose ``messages`` must be an array.
_MESSAGE_LISTS = frozenset({CHAT, MESSAGES, COUNT_TOKENS})
ENDPOINT_PATHS = {
    "/v1/chat/completions": CHAT,
    "/v1/messages": MESSAGES,
    "/v1/responses": RESPONSES,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/messages/count_tokens": COUNT_TOKENS,
    "/v1/moderations": MODERATIONS,
    "/v1/images/generations": IMAGES,
    "/v1/audio/speech": SPEECH,
    "/v1/audio/transcriptions": TRANSCRIPTIONS,
    "/v1/realtime/client_secrets": REALTIME_SECRETS,
}


def gemini_target(path: str) -> tuple[str, bool]:
    """(model, streams) of a Gemini-native path ``/v1beta/models/{model}:{method}`` (or
    ``/v1/…``)."""
    target = path.partition("/models/")[2]
    model, _, method = target.rpartition(":")
    return model, GEMINI_METHODS.get(method, False)


def _model_elsewhere(endpoint: str, body: dict[str, Any], path: str) -> Any:
    """The model of a request whose body has no top-level ``model``: a Gemini-native call's
    (in its path), a realtime session's ``session.model``, or the endpoint's default
    (moderations)."""
    if endpoint == GEMINI:
        return gemini_target(path)[0]
    if endpoint == REALTIME_SECRETS:
        session = body["session"]
        if not isinstance(session, dict) or "model" not in session:
            raise BadRequest(
                "missing required field 'session.model' (the realtime model the secret is for)",
                param="session.model",
            )
        return session["model"]
    return _DEFAULT_MODEL[endpoint]


class Intake:
    """A request's arrival: its context, its key (``authenticate``), its body read and parsed."""

    # Set by the Gateway.
    hooks: Hooks
    max_body: int

    def new_context(
        self, endpoint: str, method: str, path: str, query: bytes, headers: Any
    ) -> RequestContext:
        parent = parse_traceparent(headers.get("traceparent"))
        if parent is not None:
            trace_id, parent_span, flags = parent
        else:
            trace_id, parent_span, flags = new_trace_id(), None, 1
        return RequestContext(
            request_id=request_id(),
            endpoint=endpoint,
            method=method,
            path=path,
            query_string=query,
            headers=headers,
            trace_id=trace_id,
            span_id=new_span_id(),
            gateway=self,
            parent_span_id=parent_span,
            trace_flags=flags,
        )

    async def read_body(self, ctx: RequestContext, chunks: AsyncIterator[bytes]) -> None:
        cap = _BODY_CAPS.get(ctx.endpoint) or self.max_body
        length = ctx.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise self._too_large(ctx, cap)
        reader = BodyReader(cap)
        try:
            async for chunk in chunks:
                reader.feed(chunk)
            data = reader.data
            encoding = ctx.headers.get("content-encoding")
            if encoding:
                data = decode_body(data, encoding, cap)
        except BodyTooLarge:
            raise self._too_large(ctx, cap) from None
        except BadEncoding as exc:
            raise BadRequest(exc.message) from None
        ctx.raw_body = data

    def _too_large(self, ctx: RequestContext, cap: int) -> PayloadTooLarge:
        if ctx.endpoint == TRANSCRIPTIONS:
            return PayloadTooLarge(
                f"the audio upload exceeds {cap} bytes (26 MiB, the cap of "
                f"{ctx.path}); split the audio or compress it (e.g. mp3, opus)"
            )
        if ctx.endpoint == REALTIME_SECRETS:
            return PayloadTooLarge(
                f"the session configuration exceeds {cap} bytes (the cap of {ctx.path}); "
                "send the long parts (instructions, tools) with session.update once connected"
            )
        return PayloadTooLarge(
            f"request body exceeds {cap} bytes (the gateway's "
            "SERVER_MAX_REQUEST_BODY_BYTES cap); send a smaller body or ask the operator "
            "to raise the cap"
        )

    def parse_body(self, ctx: RequestContext) -> None:
        if ctx.endpoint == TRANSCRIPTIONS:
            self._parse_form(ctx)
            return
        raw = ctx.raw_body
        if not raw.strip():
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest(
                f"the request body must be a JSON object, not a JSON {type(body).__name__}"
            )
        # The gateway must judge exactly what the provider will act on (SPEC §2).
        try:
            duplicate = duplicate_key(raw, body)
        except ValueError as exc:
            raise BadRequest(str(exc), code="duplicate_key") from None
        if duplicate is not None:
            raise BadRequest(
                f"the request body names the key {quote_input(duplicate)} twice in one JSON "
                "object; parsers disagree on which value wins, so this gateway refuses "
                "duplicate keys. Send each key once",
                code="duplicate_key",
            )
        ctx.body = body
        for field in _REQUIRED[ctx.endpoint]:
            if field not in body:
                raise BadRequest(f"missing required field {field!r}", param=field)
        model = body["model"] if "model" in body else _model_elsewhere(ctx.endpoint, body, ctx.path)
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' must be a non-empty string", param="model")
        problem = model_problem(model)
        if problem is not None:
            raise BadRequest(f"'model' {problem}", code="invalid_model", param="model")
        ctx.model = model
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise BadRequest("'stream' must be true or false", param="stream")
        ctx.stream = bool(stream) and ctx.endpoint in _STREAMING
        if ctx.endpoint in _MESSAGE_LISTS and not isinstance(body["messages"], list):
            raise BadRequest("'messages' must be an array", param="messages")
        if ctx.endpoint == GEMINI:
            ctx.stream = gemini_target(ctx.path)[1]
        elif ctx.endpoint == SPEECH:
            text = body["input"]
            if not isinstance(text, str) or not text:
                raise BadRequest("'input' must be a non-empty string", param="input")
            if len(text) > SPEECH_MAX_CHARS:
                raise BadRequest(
                    f"'input' is {len(text)} characters; the limit is {SPEECH_MAX_CHARS}. "
                    "Split the text into several requests",
                    param="input",
                )
            # Binary audio, relayed as it arrives: never held back by the heartbeat.
            ctx.stream = True

    def _parse_form(self, ctx: RequestContext) -> None:
        """A ``multipart/form-data`` transcription request: its documented fields become the
        body, its ``file`` the stash's :data:`~tollway.media.UPLOAD`."""
        try:
            fields, upload, dropped = parse_form(ctx.raw_body, ctx.headers.get("content-type"))
        except FormError as exc:
            raise BadRequest(str(exc), code="invalid_form") from None
        ctx.body = dict(fields)
        if upload is None:
            raise BadRequest(
                "the form has no 'file' part; send the audio as the 'file' field", param="file"
            )
        model = fields.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("missing required field 'model' in the form", param="model")
        problem = model_problem(model)
        if problem is not None:
            raise BadRequest(f"'model' {problem}", code="invalid_model", param="model")
        if fields.get("stream") not in (None, "false"):
            raise BadRequest(
                "streamed transcriptions are not served by this gateway; leave 'stream' out",
                param="stream",
            )
        ctx.stash[UPLOAD] = upload
        ctx.model = model
        if dropped:
            ctx.response_headers[PARAMS_DROPPED_HEADER] = dropped_header_value(sorted(dropped))

    async def authenticate(self, ctx: RequestContext) -> None:
        headers = ctx.headers
        presented: str | None = None
        source = ""
        for name in _KEY_HEADERS:
            value = headers.get(name)
            if value:
                presented, source = value.strip(), name
                break
        if presented is not None and source == "authorization":
            scheme, _, token = presented.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise InvalidAPIKey(
                    "the Authorization header must be 'Bearer <virtual key>'",
                    code="malformed_key",
                )
            presented = token.strip()
        try:
            secret = check_key_format(presented)
        except KeyFormatError as exc:
            raise InvalidAPIKey(exc.message, code=exc.code) from None
        principal = await self.hooks.authenticate(ctx, Credential(secret, source))
        if principal is None:
            raise InvalidAPIKey(
                f"the virtual key {secret[:18]}… is not known to this gateway; check that you "
                "copied the whole secret, that the key was not deleted, and that the CLI that "
                "created it uses this gateway's store (`tollway status` compares them)",
                code="unknown_key",
            )
        ctx.principal = principal
