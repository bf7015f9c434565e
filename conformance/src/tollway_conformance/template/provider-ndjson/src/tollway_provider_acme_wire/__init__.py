"""Tollway provider adapter for Acme's own API (``type = "acme"``).

Acme does not speak the OpenAI wire: ``POST {base_url}/generate`` takes its own JSON
(``prompt`` turns, ``max_output``), authenticates with ``x-acme-key``, answers
``{"output", "finish", "tokens"}``, streams newline-delimited JSON (``{"type": "delta"}`` lines
then one ``{"type": "end"}`` line) and reports errors as ``{"problem": {"kind", "detail"}}``.

The adapter speaks **chat** to the gateway (``endpoints = {"chat"}``): it turns a chat request
into Acme's and Acme's answer into a chat completion or chat chunks. Anthropic clients
(``/v1/messages``) and OpenAI Responses clients (``/v1/responses``) are served too, with no code
here: chat is the hub, and the core translates their requests to chat before
:meth:`AcmeProvider.send` and the answer back after it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import orjson

from tollway import (
    BadRequest,
    RequestContext,
    RouteTarget,
    UpstreamConnectError,
    UpstreamHTTPError,
    Usage,
    hookimpl,
)
from tollway.formats import (
    SSE_DONE,
    chat_chunk,
    chat_messages,
    chat_usage_chunk,
    dropped_chat_params,
    new_chat_completion_id,
    report_dropped,
    text_of_parts,
    usage_to_chat,
)
from tollway.jsonlines import relay_json_lines
from tollway.provider import (
    Provider,
    ProviderResult,
    UpstreamHTTP,
    forwardable_request_headers,
    read_body,
    response_headers,
)

__all__ = [
    "AcmeProvider",
    "chat_completion",
    "error_for_client",
    "generate_request",
    "register_providers",
    "usage_of",
]

#: Chat request fields this adapter maps; any other is dropped and reported to the client.
_HANDLED = ("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stream")
_SPEAKERS = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
#: Acme's ``finish`` → the chat ``finish_reason``.
_FINISH = {"done": "stop", "limit": "length"}
#: Acme's error ``kind`` → the OpenAI error ``type`` the client's SDK understands.
_ERROR_TYPES = {
    "bad_input": "invalid_request_error",
    "no_credit": "insufficient_quota",
    "busy": "rate_limit_error",
}


def generate_request(body: dict[str, Any], model: str) -> tuple[dict[str, Any], list[str]]:
    """A chat request as Acme's ``/generate`` body, and the chat parameters it cannot take.

    Bad input raises :class:`~tollway.BadRequest` naming the field (the client gets a 400 in
    its own format), never a 500.
    """
    dropped = dropped_chat_params(body, _HANDLED)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array", param="messages")
    prompt = []
    for where, role, message in chat_messages(messages, dropped):
        if role not in _SPEAKERS:
            raise BadRequest(
                f"{where}: Acme takes system, user and assistant turns only, not {role!r}",
                param=where,
            )
        text = "".join(text_of_parts(message.get("content"), f"{where}.content", upstream="Acme"))
        prompt.append({"speaker": _SPEAKERS[role], "text": text})
    out: dict[str, Any] = {"model": model, "prompt": prompt, "stream": bool(body.get("stream"))}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise BadRequest("max_tokens must be a positive integer", param="max_tokens")
        out["max_output"] = limit
    if body.get("temperature") is not None:
        out["temperature"] = body["temperature"]
    return out, list(dropped.result())


def usage_of(doc: object) -> Usage | None:
    """The usage of Acme's answer or ``end`` line (``{"tokens": {"in": …, "out": …}}``)."""
    tokens = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(tokens, dict):
        return None
    return Usage(input_tokens=int(tokens.get("in") or 0), output_tokens=int(tokens.get("out") or 0))


def chat_completion(doc: dict[str, Any], model: str, usage: Usage | None) -> dict[str, Any]:
    """Acme's answer as an OpenAI ``chat.completion``."""
    out: dict[str, Any] = {
        "id": new_chat_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": str(doc.get("output") or "")},
                "logprobs": None,
                "finish_reason": _FINISH.get(str(doc.get("finish")), "stop"),
            }
        ],
    }
    if usage is not None:
        out["usage"] = usage_to_chat(usage)
    return out


def error_for_client(status: int, body: bytes) -> bytes:
    """Acme's ``{"problem": …}`` error as the OpenAI envelope (the core re-wraps it for
    Anthropic clients)."""
    try:
        problem = orjson.loads(body).get("problem") or {}
    except (orjson.JSONDecodeError, AttributeError):
        problem = {}
    kind = str(problem.get("kind") or "upstream_error")
    detail = str(problem.get("detail") or f"Acme answered HTTP {status}")
    error_type = _ERROR_TYPES.get(kind, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps(
        {"error": {"type": error_type, "code": kind, "message": detail, "param": None}}
    )


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class AcmeProvider(Provider):
    """Acme's ``/generate`` API at ``https://api.acme.example``."""

    type: ClassVar[str] = "acme"
    #: Chat only: the core serves Anthropic clients by translating to and from chat.
    endpoints = frozenset({"chat"})
    default_base_url = "https://api.acme.example"
    default_models = ("acme-*",)
    listed_models = ("acme-large", "acme-small")

    def validate(self) -> list[str]:
        return [] if self.api_key else ["api_key: a provider of type acme needs api_key"]

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        body, dropped = generate_request(ctx.body, target.model)
        report_dropped(ctx, dropped)  # X-LangWatch-Params-Dropped tells the client
        # The client's own headers travel (the conformance kit's fault headers among them).
        headers = forwardable_request_headers(ctx.headers.items())
        headers["x-acme-key"] = self.api_key
        headers["content-type"] = "application/json"

        # Transport failures raise UpstreamConnectError / UpstreamTimeoutError (→ 502 / 504).
        resp = await http.post(self.base_url + "/generate", headers, orjson.dumps(body))
        if resp.status >= 400:
            # Acme's error shape, rewritten so the client's SDK can read it; the status stays.
            data = await read_body(resp)
            out = [(k, v) for k, v in response_headers(resp.headers.items())]
            out = [(k, v) for k, v in out if k.lower() not in ("content-type", "content-length")]
            out.append(("content-type", "application/json"))
            raise UpstreamHTTPError(resp.status, out, error_for_client(resp.status, data))
        # Acme's own content type is not the client's: the core sets text/event-stream for a
        # stream, and a complete answer is JSON.
        out_headers = [
            (k, v) for k, v in response_headers(resp.headers.items()) if k.lower() != "content-type"
        ]
        if ctx.stream:
            # Read the request here, not in the iterator: it runs after send() returns, and for
            # an Anthropic client the core has by then restored the client's own body (which
            # has no stream_options; the translated chat body asked for the usage chunk).
            wants_usage = _wants_usage(ctx.body)
            events = self._events(ctx, resp, target.model, wants_usage)
            return ProviderResult(resp.status, out_headers, events=events, close=resp.close)
        doc = orjson.loads(await read_body(resp))
        ctx.usage = usage_of(doc)
        answer = chat_completion(doc, target.model, ctx.usage)
        out_headers.append(("content-type", "application/json"))
        return ProviderResult(resp.status, out_headers, body=orjson.dumps(answer))

    async def _events(
        self, ctx: RequestContext, resp: Any, model: str, wants_usage: bool
    ) -> AsyncIterator[bytes]:
        """Acme's JSON lines as ``chat.completion.chunk`` SSE events; the usage chunk when
        ``wants_usage`` (the request's ``stream_options.include_usage``)."""
        chunk_id, created = new_chat_completion_id(), int(time.time())
        yield chat_chunk(chunk_id, created, model, {"role": "assistant", "content": ""})
        async for line in relay_json_lines(resp):  # transport errors → terminal error event
            if not isinstance(line, dict):
                continue
            if line.get("type") == "delta":
                yield chat_chunk(chunk_id, created, model, {"content": str(line.get("text", ""))})
            elif line.get("type") == "end":
                usage = usage_of(line)
                if usage is not None:
                    ctx.usage = usage  # accounted even when the client did not ask to see it
                finish = _FINISH.get(str(line.get("finish")), "stop")
                tail = chat_chunk(chunk_id, created, model, {}, finish)
                if usage is not None and wants_usage:
                    tail += chat_usage_chunk(chunk_id, created, model, usage)
                yield tail + SSE_DONE
                return
        # A stream cut before its end line is a failure, not a short answer: raising turns it
        # into the client stream's terminal `event: error`.
        raise UpstreamConnectError("Acme's stream ended before its end line")


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(AcmeProvider)
