"""The Anthropic wire: /v1/messages, relayed as it arrives."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from tollway import RequestContext, RouteTarget, Usage
from tollway._sse import event_fields
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

DEFAULT_VERSION = "2023-06-01"


def messages_usage(usage: dict[str, Any], base: Usage | None = None) -> Usage:
    """Merge an Anthropic ``usage`` object into ``base`` (message_delta repeats or extends
    what message_start said; later non-zero values win)."""
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


class AnthropicProvider(Provider):
    """api.anthropic.com (or a compatible base URL): the Messages API."""

    type: ClassVar[str] = "anthropic"
    endpoints = frozenset({"messages"})
    default_base_url = "https://api.anthropic.com"
    default_models = ("claude-*",)
    listed_models = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")

    def _headers(self, ctx: RequestContext) -> dict[str, str]:
        headers = forwardable_request_headers(ctx.headers.items())
        headers["x-api-key"] = self.api_key
        headers["content-type"] = "application/json"
        if "anthropic-version" not in headers:
            headers["anthropic-version"] = str(
                self.config.config.get("anthropic_version", DEFAULT_VERSION)
            )
        return headers

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        url = upstream_url(self.base_url, "/v1/messages", ctx.query_string)
        if target.model != ctx.model:
            body = dict(ctx.body)
            body["model"] = target.model
            payload = orjson.dumps(body)
        else:
            payload = ctx.body_bytes()
        resp = await http.post(url, self._headers(ctx), payload)
        await raise_for_upstream_status(resp)
        headers = response_headers(resp.headers.items())
        if ctx.stream and resp.headers.get("content-type", "").startswith("text/event-stream"):
            events = relay_sse(resp, self._inspector(ctx), b"event: message_")
            return ProviderResult(resp.status, headers, events=events, close=resp.close)
        data = await read_body(resp)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("usage"), dict):
            ctx.usage = messages_usage(doc["usage"])
        return ProviderResult(resp.status, headers, body=data)

    @staticmethod
    def _inspector(ctx: RequestContext) -> Any:
        def inspect(event: bytes) -> bytes | None:
            name, data = event_fields(event)
            if name not in ("message_start", "message_delta"):
                return None
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                return None
            if not isinstance(doc, dict):
                return None
            usage = (doc.get("message") or {}).get("usage") if name == "message_start" else None
            if name == "message_delta":
                usage = doc.get("usage")
            if isinstance(usage, dict):
                ctx.usage = messages_usage(usage, ctx.usage)
            return None

        return inspect
