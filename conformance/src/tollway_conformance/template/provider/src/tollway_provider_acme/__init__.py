"""Tollway provider adapter for Acme's chat API (``type = "acme"``).

Acme speaks the OpenAI chat-completions wire at its own base URL, so the adapter relays the
client's bytes and the upstream's answer as they are, and reads the token usage on the way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from tollway import RequestContext, RouteTarget, Usage, hookimpl
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

__all__ = ["AcmeProvider", "register_providers", "usage_of"]


def usage_of(doc: object) -> Usage | None:
    """The usage of an OpenAI-style chat completion or chunk, if it carries one."""
    usage = doc.get("usage") if isinstance(doc, dict) else None
    if not isinstance(usage, dict):
        return None
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0) - int(cached),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cache_read_input_tokens=int(cached),
    )


def _client_wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class AcmeProvider(Provider):
    """Acme: the OpenAI chat wire at ``https://api.acme.example/v1``."""

    type: ClassVar[str] = "acme"
    endpoints = frozenset({"chat"})
    default_base_url = "https://api.acme.example/v1"
    default_models = ("acme-*",)
    listed_models = ("acme-large", "acme-small")

    def validate(self) -> list[str]:
        return [] if self.api_key else ["api_key: a provider of type acme needs api_key"]

    def _body(self, ctx: RequestContext, target: RouteTarget) -> bytes:
        body = ctx.body
        changed = target.model != ctx.model
        if ctx.stream and not _client_wants_usage(body):
            # Streams carry usage only when asked for: ask, and hide that chunk (below).
            body = {
                **body,
                "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
            }
            changed = True
        if not changed:
            return ctx.body_bytes()  # the client's bytes, unless a hook rewrote the body
        return json.dumps({**body, "model": target.model}).encode()

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        headers = forwardable_request_headers(ctx.headers.items())
        headers["authorization"] = f"Bearer {self.api_key}"
        headers["content-type"] = "application/json"
        url = upstream_url(self.base_url, "/chat/completions", ctx.query_string)

        resp = await http.post(url, headers, self._body(ctx, target))  # transport errors raise
        await raise_for_upstream_status(resp)  # >= 400: UpstreamHTTPError, passed through
        out_headers = response_headers(resp.headers.items())

        if ctx.stream and resp.headers.get("content-type", "").startswith("text/event-stream"):
            hide_usage_chunk = not _client_wants_usage(ctx.body)

            def inspect(event: bytes) -> bytes | None:
                # Called for events containing the marker; None keeps the event, b"" drops it.
                data = event.partition(b"data:")[2].strip()
                try:
                    doc = json.loads(data)
                except ValueError:
                    return None
                usage = usage_of(doc)
                if usage is None:
                    return None
                ctx.usage = usage
                if hide_usage_chunk and doc.get("choices") == []:
                    return b""
                return None

            events = relay_sse(resp, inspect, marker=b'"usage"')
            return ProviderResult(resp.status, out_headers, events=events, close=resp.close)

        data = await read_body(resp)
        try:
            ctx.usage = usage_of(json.loads(data))
        except ValueError:
            pass
        return ProviderResult(resp.status, out_headers, body=data)


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(AcmeProvider)
