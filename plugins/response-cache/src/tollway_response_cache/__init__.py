"""Exact-match response cache (SPEC §6, "beyond"), per virtual key.

On for a key whose config has ``"response_cache": {"ttl_s": 300}`` (absent: off, and every hook
returns after one dict lookup). A request that asks for exactly what an earlier one asked (same
endpoint, resolved model, body, stream flag — see :mod:`tollway_response_cache._key`) within
``ttl_s``, from the same project, gets the earlier answer replayed byte-for-byte, streams
included, without an upstream call. ``X-LangWatch-Cache: hit|miss|bypass|force`` on the
response says what happened.

How it fits the pipeline (authenticate → admit → pre_guardrail → answer → route → dispatch →
account):

* ``answer`` looks the request up. A hit is answered from the cache directly
  (:func:`~tollway_response_cache._provider.replay`): no route, no provider, no circuit
  breaker; rate limits (in ``admit``) still count it while budgets see no usage, and the reply
  goes through post guardrails, stream listeners and ``account`` like a provider's. A miss
  defers to the router and marks the request for capture. Concurrent identical misses coalesce:
  the first calls the upstream, the others wait for its answer (in-process; across replicas
  through a Redis fill lock).
* ``post_guardrail`` (``tryfirst``) keeps a miss's complete body; a per-request stream listener
  (registered first) buffers a miss's stream as it is relayed.
* ``account`` wakes the coalesced waiters and stores the answer when the call succeeded
  (status < 400, no mid-stream failure, no client disconnect, a complete stream).

With Redis the lookup adds no round trip of its own: it travels in the request's one round
trip with the admission calls other plugins deferred (``tollway.redis_batch``), and a request
that admission refuses is refused by ``answer`` before the cache answers or waits for anything
(its fill lock freed at once). Stores and lock releases are queued settlements, off the path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tollway import BadRequest, RequestContext, StashKey, hookimpl, quote_input
from tollway.redis import round_trip_deadline, shared
from tollway.redis_batch import flush_request
from tollway.sse import SSESplitter
from tollway_response_cache._entry import Entry, decode, encode
from tollway_response_cache._key import (
    IGNORED_FIELDS,
    KEYED_HEADERS,
    cache_digest,
    cache_scope,
    cacheable_temperature,
)
from tollway_response_cache._metrics import OUTCOMES
from tollway_response_cache._provider import REQUEST, replay
from tollway_response_cache._settings import NAME, ResponseCacheSettings
from tollway_response_cache._state import RequestState, Runtime
from tollway_response_cache._store import MemoryStore, RedisStore, now_ms

if TYPE_CHECKING:
    from tollway.gateway import Gateway, ResponseView
    from tollway.provider import ProviderResult

__all__ = [
    "DEFAULT_TTL_S",
    "HEADER",
    "IGNORED_FIELDS",
    "KEYED_HEADERS",
    "Entry",
    "ResponseCacheSettings",
    "cache_digest",
    "cache_scope",
    "cacheable_temperature",
    "decode",
    "encode",
    "validate_config",
]

log = logging.getLogger("tollway.response_cache")

#: Request and response header.
HEADER = "X-LangWatch-Cache"
#: ``ttl_s`` when ``response_cache`` is present without one.
DEFAULT_TTL_S = 300

_RUNTIME: StashKey[Runtime] = StashKey("response-cache.runtime")

# What ends a complete stream, per endpoint (checked in its last event).
#: The model calls whose answers are cached (a generated image or audio never is).
_CACHED_ENDPOINTS = frozenset({"chat", "messages", "responses", "embeddings"})
_TERMINAL = {
    "chat": (b"[DONE]",),
    "messages": (b"message_stop",),
    "responses": (b"response.completed", b"response.incomplete"),
}


def validate_config(config: Mapping[str, Any]) -> list[str]:
    """Problems with a key config's ``response_cache`` section, one line each with its JSON
    path (for write-time validation; an empty list means valid)."""
    section = config.get("response_cache")
    if section is None:
        return []
    if not isinstance(section, Mapping):
        return ['response_cache: must be an object like {"ttl_s": 300}']
    problems = [
        f"response_cache.{key}: unknown field (known: ttl_s)" for key in section if key != "ttl_s"
    ]
    ttl = section.get("ttl_s", DEFAULT_TTL_S)
    if _ttl_ms(ttl) is None:
        problems.append(f"response_cache.ttl_s: {ttl!r} must be a positive number of seconds")
    return problems


def _ttl_ms(ttl: Any) -> int | None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        return None
    return max(1, round(ttl * 1000))


# --- start-up ------------------------------------------------------------------------------------


@hookimpl
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    register(NAME, ResponseCacheSettings)


@hookimpl
async def gateway_started(gateway: Gateway) -> None:
    settings: ResponseCacheSettings = gateway.settings.plugin(NAME)
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    redis = shared(gateway, NAME, cluster=settings.redis_cluster)
    store: MemoryStore | RedisStore
    if redis is not None:
        deadline = round_trip_deadline(
            settings.redis_socket_timeout_seconds, settings.redis_connect_timeout_seconds
        )
        store = RedisStore(redis.client, settings.key_prefix, deadline)
    else:
        store = MemoryStore(settings.max_entries, settings.max_memory_bytes)
    runtime = Runtime(settings, store, redis)
    if redis is not None:
        runtime.policy.share(redis)  # one back-off and one probe for every plugin
    gateway.stash[_RUNTIME] = runtime
    if isinstance(store, RedisStore):
        status = await runtime.check()
        if status != "ok":
            log.warning("response_cache_redis_unavailable during=start-up %s", status)
    log.info(
        "response_cache_ready backend=%s coalesce=%s",
        "redis" if isinstance(store, RedisStore) else "memory",
        settings.coalesce,
    )


@hookimpl
async def gateway_stopping(gateway: Gateway) -> None:
    runtime = gateway.stash.get(_RUNTIME)
    if runtime is not None:
        await runtime.close()


@hookimpl
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    if not gateway.settings.redis_url:
        return None

    async def response_cache() -> str:
        runtime = gateway.stash.get(_RUNTIME)
        return "ok" if runtime is None else await runtime.check()

    return {"response_cache": response_cache}


# --- per request ---------------------------------------------------------------------------------


#: The outcome counters, looked up once each (``labels()`` takes a lock and builds a key).
_COUNTERS: dict[str, Any] = {}


def _outcome(ctx: RequestContext, outcome: str) -> None:
    ctx.response_headers[HEADER] = outcome
    ctx.span_attributes["langwatch.cache.outcome"] = outcome
    counter = _COUNTERS.get(outcome)
    if counter is None:
        counter = _COUNTERS[outcome] = OUTCOMES.labels(outcome)
    counter.inc()


@hookimpl(tryfirst=True)
async def answer(ctx: RequestContext) -> ProviderResult | None:
    """Answer a hit from the cache (see the module docstring); ``None`` defers on a miss."""
    principal = ctx.principal
    if principal is None or ctx.endpoint not in _CACHED_ENDPOINTS:
        return None
    section = principal.config.get("response_cache")
    if section is None:
        return None
    runtime = ctx.gateway.stash.get(_RUNTIME)
    if runtime is None:
        return None
    ttl = section.get("ttl_s", DEFAULT_TTL_S) if isinstance(section, Mapping) else None
    ttl_ms = _ttl_ms(ttl)
    if ttl_ms is None:
        # A cache is an optimisation: a broken config turns it off, it never fails a request.
        if principal.key_id not in runtime.warned:
            runtime.warned.add(principal.key_id)
            log.warning(
                "response_cache_config_invalid key=%s ttl_s=%r; caching is off for this key",
                principal.key_id,
                ttl,
            )
        return None
    force = False
    asked = ctx.headers.get(HEADER)
    if asked:
        asked = asked.strip().lower()
        if asked == "bypass":
            _outcome(ctx, "bypass")
            return None
        if asked != "force":
            # What admission deferred is sent first: its refusal, if any, comes first (as it
            # would at the core's flush point), and its calls are made either way.
            await flush_request(ctx)
            raise BadRequest(
                f"the {HEADER} request header must be 'bypass' (skip the response cache) or "
                f"'force' (cache even with temperature > 0), not {quote_input(asked)}",
                param=HEADER,
            )
        force = True
    body = ctx.body
    if not force and not cacheable_temperature(body):
        _outcome(ctx, "bypass")
        return None
    try:
        digest = cache_digest(ctx.endpoint, ctx.model, ctx.stream, body, ctx.headers)
    except TypeError:
        _outcome(ctx, "bypass")
        return None
    key = f"{cache_scope(principal.organization_id, principal.project_id)}:{digest}"
    state = RequestState(key, ttl_ms, runtime.settings.max_entry_bytes)
    ctx.stash[REQUEST] = state
    entry = await runtime.obtain(state, ctx)
    if entry is not None and entry.stream == ctx.stream:
        state.entry = entry
        _outcome(ctx, "hit")
        return replay(ctx, entry)
    state.capture = True
    if ctx.stream:
        state.stream_buffer = bytearray()
        # First, so it captures the chunk as the upstream sent it (a replay is guarded again).
        ctx.stream_listeners.insert(0, _capture_chunk)
    _outcome(ctx, "force" if force else "miss")
    return None


@hookimpl(tryfirst=True)
def post_guardrail(ctx: RequestContext, response: ResponseView) -> None:
    """Keep a miss's complete answer (before other guardrails rewrite it: a replay goes through
    them again)."""
    state = ctx.stash.get(REQUEST)
    if state is not None and state.capture:
        state.body = response.body
    return None


def _capture_chunk(ctx: RequestContext, chunk: bytearray) -> None:
    """Buffer a miss's stream as relayed (registered first, so it is unmodified)."""
    state = ctx.stash.get(REQUEST)
    if state is not None and state.stream_buffer is not None:
        state.append(chunk)
    return None


@hookimpl
async def account(ctx: RequestContext) -> None:
    """Store a successful miss and wake the requests that waited for it."""
    state = ctx.stash.get(REQUEST)
    if state is None:
        return
    runtime = ctx.gateway.stash.get(_RUNTIME)
    if runtime is None:
        return
    entry = _entry(ctx, state) if state.capture else None
    if entry is not None:
        await runtime.put(state, entry)
        return
    runtime.settle(state, None)
    # A leader refused before reaching an upstream (e.g. by a deferred before_attempt check)
    # just frees the lock; one whose upstream call failed leaves the short "failed" mark.
    runtime.release(state, failed=any(a.outcome != "skipped" for a in ctx.attempts))


def _entry(ctx: RequestContext, state: RequestState) -> Entry | None:
    """The answer to store, or None when it must not be cached."""
    status = ctx.status
    if (
        status is None
        or status >= 400
        or ctx.error_type is not None
        or ctx.client_disconnected
        or not any(a.outcome == "ok" for a in ctx.attempts)
    ):
        return None
    body: bytes | None = None
    events: tuple[bytes, ...] | None = None
    if not ctx.stream:
        body = state.body
        if body is None or len(body) > state.max_bytes:
            return None
    else:
        buffer = state.stream_buffer
        if buffer is None or not buffer or ctx.terminated_at_chunk is not None:
            return None
        splitter = SSESplitter()
        blocks = splitter.feed(bytes(buffer))
        if splitter.tail().strip() or not blocks:
            return None  # ended inside an event
        terminal = _TERMINAL.get(ctx.endpoint)
        if terminal is not None and not any(t in blocks[-1] for t in terminal):
            return None  # the stream did not finish the way its wire format finishes
        events = tuple(blocks)
    return Entry(
        status=status,
        body=body,
        events=events,
        created_ms=now_ms(),
        provider=ctx.provider,
        provider_type=ctx.provider_type,
        model=ctx.resolved_model,
    )
