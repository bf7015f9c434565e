"""How a cache hit is answered without an upstream call.

The ``answer`` hook returns :func:`replay`'s result; the core sends it through the same response
path as an upstream answer (post guardrails, stream listeners, headers, ``account``), without a
route, a provider or a circuit breaker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from tollway import StashKey, Usage
from tollway.provider import ProviderResult

if TYPE_CHECKING:
    from tollway import RequestContext
    from tollway_response_cache._entry import Entry
    from tollway_response_cache._state import RequestState

__all__ = ["REQUEST", "replay"]

#: The per-request state, shared by the hooks.
REQUEST: StashKey[RequestState] = StashKey("response-cache.request")

_JSON = [("content-type", "application/json")]
_SSE = [("content-type", "text/event-stream; charset=utf-8")]


async def _replay(events: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    """The stored events, one chunk per event, as they were first relayed."""
    for event in events:
        yield event


def replay(ctx: RequestContext, entry: Entry) -> ProviderResult:
    """The stored answer as the client first received it, byte for byte."""
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
