"""The Bedrock Converse wire: ``/model/{modelId}/converse`` and ``/converse-stream``.

Both client formats are served by translation through the chat hub: chat ⇄ Converse directly
(:mod:`tollway_provider_bedrock.translate`), Anthropic messages through the core's
messages ⇄ chat translators on top.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import orjson
import yarl

from tollway import (
    RequestContext,
    RouteTarget,
    UpstreamConnectError,
    UpstreamTimeoutError,
)
from tollway.config import ProviderConfig
from tollway.formats import (
    ChatToMessagesStream,
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
    response_headers,
)
from tollway.wire.anthropic import estimated_count_tokens
from tollway_provider_bedrock.eventstream import converse_stream_to_chat
from tollway_provider_bedrock.translate import (
    ConverseToChatStream,
    chat_request_to_converse,
    converse_response_to_chat,
    converse_usage,
)

__all__ = ["EVENTSTREAM_CT", "SERVICE", "BedrockProvider", "converse_url"]

#: The SigV4 service name of the Bedrock runtime.
SERVICE = "bedrock"
EVENTSTREAM_CT = "application/vnd.amazon.eventstream"
_AUTH_MODES = ("sigv4", "bearer")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
# Client headers that mean nothing to Bedrock, or would disturb the signature.
_NOT_FORWARDED = ("x-amz", "anthropic-", "openai-", "x-stainless-", "accept", "content-type")


def converse_url(base_url: str, model: str, *, stream: bool) -> str:
    """The Converse URL for ``model``, its id percent-encoded as one path segment (``:`` and
    ``/`` of inference profiles and ARNs included), as botocore sends it."""
    action = "converse-stream" if stream else "converse"
    return f"{base_url}/model/{quote(model, safe='')}/{action}"


class BedrockProvider(Provider):
    """Amazon Bedrock's Converse API (bedrock-runtime), SigV4-signed or with a Bedrock API key.

    Serves ``/v1/chat/completions`` and ``/v1/messages`` by translation (neither is the
    provider's own wire, so at equal priority native providers are tried first).
    """

    type: ClassVar[str] = "bedrock"
    endpoints = frozenset({"chat", "messages", "count_tokens"})
    native_endpoints: ClassVar[frozenset[str] | None] = frozenset()
    default_models = (
        "anthropic.*",
        "amazon.*",
        "meta.*",
        "mistral.*",
        "cohere.*",
        "ai21.*",
        "deepseek.*",
        "qwen.*",
        "openai.*",
        "writer.*",
        "us.*",
        "us-gov.*",
        "eu.*",
        "apac.*",
        "jp.*",
        "au.*",
        "ca.*",
        "global.*",
        "arn:aws:bedrock:*",
        "arn:aws-us-gov:bedrock:*",
    )
    listed_models = (
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "amazon.nova-pro-v1:0",
        "meta.llama3-1-70b-instruct-v1:0",
    )

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        settings = config.config
        self.region = str(settings.get("region") or "")
        self.auth = str(settings.get("auth") or "sigv4")
        if not config.base_url and self.region:
            self.base_url = f"https://bedrock-runtime.{self.region}.amazonaws.com"
        #: Client model id → Bedrock model id or inference profile (``claude-sonnet-4-5`` →
        #: ``us.anthropic.claude-sonnet-4-5-20250929-v1:0``): the map's keys are served too.
        self.model_ids = ModelIds(
            config, '{ "claude-sonnet-4-5" = "us.anthropic.claude-sonnet-4-5-20250929-v1:0" }'
        )
        self._credentials: Any = None
        if self.auth == "sigv4":
            parts = self.api_key.split(":")
            if len(parts) in (2, 3) and all(parts):
                # botocore (several MiB) is imported once a bedrock provider is configured,
                # not when the plugin loads.
                from botocore.credentials import Credentials  # type: ignore[import-untyped]

                self._credentials = Credentials(
                    parts[0], parts[1], parts[2] if len(parts) == 3 else None
                )

    def validate(self) -> list[str]:
        problems = []
        if not self.region:
            problems.append(
                "config.region: missing; set the AWS region of the Bedrock runtime, e.g. "
                '"us-east-1" (it is part of every SigV4 signature and of the default base_url)'
            )
        elif not _REGION.fullmatch(self.region):
            problems.append(
                f"config.region: {self.region!r} is not an AWS region name (e.g. us-east-1)"
            )
        if self.auth not in _AUTH_MODES:
            problems.append(
                f"config.auth: {self.auth!r} is not one of sigv4 (api_key = "
                '"ACCESS_KEY_ID:SECRET_ACCESS_KEY"), bearer (api_key = a Bedrock API key)'
            )
        elif self.auth == "sigv4" and self._credentials is None:
            problems.append(
                'api_key: for SigV4 set it to "<access key id>:<secret access key>" (or '
                '"<access key id>:<secret access key>:<session token>"); for a Bedrock API key '
                'set config.auth = "bearer"'
            )
        elif self.auth == "bearer" and not self.api_key:
            problems.append('api_key: missing; config.auth = "bearer" sends it as a Bearer token')
        problems.extend(self.model_ids.problems())
        return problems

    def serves(self, model: str) -> bool:
        return model in self.model_ids or super().serves(model)

    def models(self) -> list[str]:
        mapped = self.model_ids.map
        return [*mapped, *(m for m in super().models() if m not in mapped)]

    # --- the upstream request ------------------------------------------------------------

    def _headers(
        self, ctx: RequestContext, url: str, payload: bytes, accept: str
    ) -> dict[str, str]:
        headers = {
            k: v
            for k, v in forwardable_request_headers(ctx.headers.items()).items()
            if not k.startswith(_NOT_FORWARDED)
        }
        wire = {"content-type": "application/json", "accept": accept}
        if self.auth == "bearer":
            headers.update(wire)
            headers["authorization"] = f"Bearer {self.api_key}"
            return headers
        if self._credentials is None:
            raise UpstreamConnectError(
                f"provider {self.name} has no usable AWS credentials (see its api_key)"
            )
        from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]

        request = AWSRequest(method="POST", url=url, data=payload, headers=wire)
        SigV4Auth(self._credentials, SERVICE, self.region).add_auth(request)
        headers.update(request.headers.items())
        return headers

    # --- send ------------------------------------------------------------------------------

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        if ctx.endpoint == "count_tokens":
            return estimated_count_tokens(ctx.body)
        messages = ctx.endpoint == "messages"
        chat_body: dict[str, Any] = ctx.body
        dropped: tuple[str, ...] = ()
        if messages:
            chat_body, dropped = messages_request_to_chat(ctx.body, model=target.model)
        upstream_model = self.model_ids.upstream(target.model)
        body, more = chat_request_to_converse(chat_body, model=upstream_model)
        report_dropped(ctx, dict.fromkeys((*dropped, *more)))
        # Anthropic clients get message ids of their own format.
        answer_id = ("msg_bdrk_" if messages else "chatcmpl-") + os.urandom(12).hex()
        payload = orjson.dumps(body)
        stream = ctx.stream
        url = converse_url(self.base_url, upstream_model, stream=stream)
        accept = EVENTSTREAM_CT if stream else "application/json"
        # Sent exactly as signed (yarl would decode the model id's ``%3A`` otherwise).
        signed = self._headers(ctx, url, payload, accept)
        resp = await http.post(yarl.URL(url, encoded=True), signed, payload)
        await raise_for_upstream_status(resp)
        headers = [
            (k, v) for k, v in response_headers(resp.headers.items()) if k.lower() != "content-type"
        ]
        ctype = resp.headers.get("content-type", "")
        if stream:
            if not ctype.startswith(EVENTSTREAM_CT):
                data = await read_body(resp)
                raise TranslationError(
                    f"Bedrock answered a converse-stream call with {ctype or 'no content type'} "
                    f"instead of {EVENTSTREAM_CT}: {data[:200]!r}"
                )
            options = chat_body.get("stream_options")
            translator = ConverseToChatStream(
                model=target.model,
                include_usage=messages
                or (isinstance(options, dict) and options.get("include_usage") is True),
                on_usage=lambda usage: setattr(ctx, "usage", usage),
                id_=answer_id,
            )
            events = converse_stream_to_chat(_chunks(resp), translator)
            if messages:
                events = reframe_sse(events, ChatToMessagesStream(model=target.model))
            headers.append(("content-type", "text/event-stream"))
            return ProviderResult(resp.status, headers, events=events, close=resp.close)
        data = await read_body(resp)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raise TranslationError(
                f"Bedrock answered HTTP {resp.status} with a body that is not a JSON object, so "
                f"it cannot be translated: {data[:200]!r}"
            )
        usage = doc.get("usage")
        if isinstance(usage, dict):
            ctx.usage = converse_usage(usage)
        chat = converse_response_to_chat(doc, model=target.model, id_=answer_id)
        out = chat_response_to_messages(chat) if messages else chat
        headers.append(("content-type", "application/json"))
        return ProviderResult(resp.status, headers, body=orjson.dumps(out))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.base_url} auth={self.auth}>"


async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream body as it arrives, transport failures mapped; closes the response."""
    try:
        async for data in resp.content.iter_any():
            yield data
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeoutError("Bedrock stopped sending events (read timeout)") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectError(f"Bedrock connection lost mid-stream: {exc!r}") from exc
    finally:
        resp.close()
