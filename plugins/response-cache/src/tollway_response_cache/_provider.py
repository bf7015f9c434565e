"""The replay "provider": how a cache hit is served without an upstream call.

The ``route`` hook answers a hit with one route target naming this adapter; the core then
dispatches to it like to any provider, so a hit goes through the same response path as an
upstream answer (post guardrails, stream listeners, headers, ``account``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from tollway import StashKey, UpstreamConnectError, Usage
from tollway.provider import Provider, ProviderResult, UpstreamHTTP

if TYPE_CHECKING:
    from tollway import RequestContext, RouteTarget
    from tollway_response_cache._state import RequestState

__all__ = ["PROVIDER_ID", "PROVIDER_TYPE", "REQUEST", "ReplayProvider"]

PROVIDER_TYPE = "tollway-response-cache"
PROVIDER_ID = "response-cache"

#: The per-request state, shared by the hooks and the replay provider.
REQUEST: StashKey[RequestState] = StashKey("response-cache.request")

_JSON = [("content-type", "application/json")]
_SSE = [("content-type", "text/event-stream; charset=utf-8")]


async def _replay(events: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    """The stored events, one chunk per event, as they were first relayed."""
    for event in events:
        yield event


class ReplayProvider(Provider):
    """Serves the cache entry the ``route`` hook found (``ctx.stash[REQUEST].entry``)."""

    type = PROVIDER_TYPE
    endpoints = frozenset({"chat", "messages", "responses", "embeddings"})
    default_models = ("*",)

    def validate(self) -> list[str]:
        # Built by the plugin itself, never from [[providers]]: configured there, the built-in
        # router would send real traffic to a provider that can only replay.
        return [
            f"type {PROVIDER_TYPE!r} is internal to the response-cache plugin and cannot be "
            "configured as a provider; remove this entry"
        ]

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        state = ctx.stash.get(REQUEST)
        entry = state.entry if state is not None else None
        if entry is None:
            raise UpstreamConnectError(
                "the response cache was routed a request it holds no entry for"
            )
        # No tokens were spent: budgets charge nothing and tpm limits debit nothing. (None would
        # read as "answered, usage unknown", which settlement treats as the reserved estimate.)
        ctx.usage = Usage()
        # Say who produced the answer (X-LangWatch-Provider / -Model), not "the cache".
        if entry.provider_type:
            ctx.provider_type = entry.provider_type
        if entry.provider:
            ctx.provider = entry.provider
        if entry.model:
            ctx.resolved_model = entry.model
        if entry.events is not None:
            return ProviderResult(entry.status, list(_SSE), events=_replay(entry.events))
        return ProviderResult(entry.status, list(_JSON), body=entry.body)
