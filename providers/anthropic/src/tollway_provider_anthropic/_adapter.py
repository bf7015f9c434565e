"""The Anthropic wire: /v1/messages relayed as it arrives, and /v1/chat/completions translated."""

from __future__ import annotations

import re
from typing import ClassVar

import orjson

from tollway import RequestContext, RouteTarget
from tollway.formats import (
    Sampling,
    chat_request_to_messages,
    forget_dropped,
    messages_usage,
    report_dropped,
)
from tollway.provider import (
    Provider,
    ProviderResult,
    UpstreamHTTP,
    forwardable_request_headers,
    raise_for_upstream_status,
    upstream_url,
)
from tollway_provider_anthropic.answers import messages_result, messages_to_chat_result

__all__ = [
    "DEFAULT_VERSION",
    "SAMPLING_REMOVED_VERSION",
    "AnthropicProvider",
    "claude_sampling",
    "messages_usage",
]

DEFAULT_VERSION = "2023-06-01"
#: The first ``anthropic-version`` seen without sampling parameters: the anthropic SDK 2.12 sends
#: it, and its Messages API has no ``temperature``/``top_p``/``top_k`` any more. From this
#: version on, translated requests leave them out (and report them dropped).
SAMPLING_REMOVED_VERSION = "2026-10-21"
_SAMPLING_VALUES = ("all", "one", "none")
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


class AnthropicProvider(Provider):
    """api.anthropic.com (or a compatible base URL): the Messages API.

    Serves ``/v1/messages`` natively (byte-for-byte) and ``/v1/chat/completions`` by translation
    (OpenAI chat in, OpenAI chat out; see ``docs/translation.md``).
    """

    type: ClassVar[str] = "anthropic"
    endpoints = frozenset({"messages", "chat"})
    #: Client endpoints that speak this provider's own wire format (relayed byte-for-byte).
    native_endpoints: ClassVar[frozenset[str] | None] = frozenset({"messages"})
    default_base_url = "https://api.anthropic.com"
    default_models = ("claude-*",)
    listed_models = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")

    def validate(self) -> list[str]:
        problems = []
        sampling = self.config.config.get("sampling_params")
        if sampling is not None and sampling not in _SAMPLING_VALUES:
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
        if configured in _SAMPLING_VALUES:
            return configured  # type: ignore[no-any-return]
        if version >= SAMPLING_REMOVED_VERSION:
            return "none"
        return claude_sampling(model)

    def _headers(self, ctx: RequestContext, *, translated: bool = False) -> dict[str, str]:
        headers = forwardable_request_headers(ctx.headers.items())
        if translated:
            # An OpenAI client's own headers mean nothing to Anthropic.
            headers = {k: v for k, v in headers.items() if not k.startswith("openai-")}
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
        if ctx.endpoint not in self.native:
            return await self._send_chat(ctx, target, http)
        forget_dropped(ctx)
        url = upstream_url(self.base_url, "/v1/messages", ctx.query_string)
        resp = await http.post(url, self._headers(ctx), ctx.body_bytes(target.model))
        await raise_for_upstream_status(resp)
        return await messages_result(ctx, resp)

    async def _send_chat(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """An OpenAI chat request, translated to Messages and back."""
        default_max = self.config.config.get("default_max_tokens")
        headers = self._headers(ctx, translated=True)
        body, dropped = chat_request_to_messages(
            ctx.body,
            model=target.model,
            sampling=self.sampling_for(target.model, headers["anthropic-version"]),
            default_max_tokens=default_max if isinstance(default_max, int) else None,
        )
        report_dropped(ctx, dropped)
        url = upstream_url(self.base_url, "/v1/messages", b"")
        resp = await http.post(url, headers, orjson.dumps(body))
        await raise_for_upstream_status(resp)
        return await messages_to_chat_result(
            ctx, resp, model=target.model, upstream="the Anthropic upstream"
        )
