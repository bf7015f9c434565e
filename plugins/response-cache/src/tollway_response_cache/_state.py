"""Per-gateway runtime (store, in-process flights) and per-request state."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import Any

from tollway import RequestContext
from tollway.redis import BACKEND_ERRORS as BACKEND_ERRORS
from tollway.redis import FailurePolicy, RedisFacility, describe
from tollway.redis_batch import RequestBatch, Then, flush_request, request_batch, settlements
from tollway_response_cache._entry import Entry
from tollway_response_cache._metrics import COALESCED, REDIS_ERRORS
from tollway_response_cache._settings import NAME, ResponseCacheSettings
from tollway_response_cache._store import (
    ALONE,
    HIT,
    LEAD,
    WAIT,
    MemoryStore,
    RedisStore,
    now_ms,
)

__all__ = ["RequestState", "Runtime"]

log = logging.getLogger("tollway.response_cache")

_POLL_FIRST = 0.01
_POLL_MAX = 0.2


def _stale(flight: asyncio.Future[Entry | None], max_age_ms: int) -> bool:
    """An answered flight kept for its store to land that this reader must not use (a failed
    leader's, or older than the reader's TTL)."""
    if not flight.done():
        return False
    entry = flight.result()
    return entry is None or now_ms() - entry.created_ms > max_age_ms


class RequestState:
    """What one cache-enabled request carries from ``route`` to ``account``."""

    __slots__ = (
        "body",
        "capture",
        "entry",
        "flight",
        "key",
        "max_bytes",
        "stream_buffer",
        "token",
        "ttl_ms",
    )

    def __init__(self, key: str, ttl_ms: int, max_bytes: int) -> None:
        self.key = key
        self.ttl_ms = ttl_ms
        self.max_bytes = max_bytes
        #: The entry a hit replays.
        self.entry: Entry | None = None
        #: A miss whose answer should be stored.
        self.capture = False
        #: The non-streaming answer, as ``post_guardrail`` saw it.
        self.body: bytes | None = None
        #: The streamed answer so far (None: not a stream, or it outgrew ``max_bytes``).
        self.stream_buffer: bytearray | None = None
        #: The in-process flight this request leads (others wait on it).
        self.flight: asyncio.Future[Entry | None] | None = None
        #: The Redis fill-lock token this request holds ("" = none).
        self.token = ""

    def append(self, chunk: bytearray) -> None:
        buf = self.stream_buffer
        if buf is None:
            return
        if len(buf) + len(chunk) > self.max_bytes:
            self.stream_buffer = None  # too big to cache: stop buffering
            return
        buf += chunk


class Runtime:
    """One gateway's cache: the store and the in-process flights."""

    def __init__(
        self,
        settings: ResponseCacheSettings,
        store: MemoryStore | RedisStore,
        facility: RedisFacility | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        #: The gateway's Redis (None: in process), released at :meth:`close`.
        self.facility = facility
        self.flights: dict[str, asyncio.Future[Entry | None]] = {}
        #: A failing Redis is skipped (requests go upstream uncached) and logged once per
        #: ``redis_retry_interval_seconds``.
        self.policy = FailurePolicy(
            log,
            "response_cache_redis_unavailable during=%(during)s error=%(error)s; requests go "
            "upstream uncached for %(retry)gs",
            recovered="response_cache_redis_recovered",
            errors=REDIS_ERRORS,
            retry_interval=settings.redis_retry_interval_seconds,
            warn_every=None,
            typed_errors=True,
        )
        self.lock_ms = max(1, round(settings.coalesce_wait_seconds * 1000))
        #: Keys whose invalid ``response_cache`` config was already logged.
        self.warned: set[str] = set()
        # Fill-lock tokens: unique per runtime (one per worker process) without a syscall each.
        self._token_prefix = secrets.token_hex(6)
        self._tokens = itertools.count()

    @property
    def redis(self) -> bool:
        return isinstance(self.store, RedisStore)

    # --- the backend, failing open ---------------------------------------------------------

    def batch(self, ctx: RequestContext) -> RequestBatch | None:
        """The request's Redis batch (None: the in-process store)."""
        return request_batch(ctx, self.facility) if self.facility is not None else None

    async def _lookup(
        self, key: str, max_age_ms: int, token: str, batch: RequestBatch | None = None
    ) -> tuple[str, Entry | None]:
        if not self.policy.available():
            return ALONE, None
        try:
            found = await self.store.lookup(key, max_age_ms, token, self.lock_ms, batch)
        except BACKEND_ERRORS as exc:
            self.policy.failed(exc, "lookup")
            return ALONE, None
        self.policy.ok()
        return found

    def _settled(self, during: str) -> Then:
        """A settlement's continuation: the failure policy, as for a direct call."""

        def then(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                self.policy.failed(outcome, during)
            else:
                self.policy.ok()

        return then

    async def put(self, state: RequestState, entry: Entry) -> None:
        """Store ``entry`` (and free the lock ``state`` holds); with Redis a settlement. The
        coalesced waiters get it at once; the flight stays findable, answered, until the store
        has landed, so an identical request arriving meanwhile is answered from memory rather
        than waiting on the lock."""
        flight = state.flight
        state.flight = None
        token, state.token = state.token, ""
        if flight is not None and not flight.done():
            flight.set_result(entry)
        store = self.store
        if isinstance(store, MemoryStore):
            await store.put(state.key, entry, state.ttl_ms, token)
            self._forget(state.key, flight)
            return
        if self.facility is None or not self.policy.available():
            self._forget(state.key, flight)
            return
        stored = self._settled("store")
        key = state.key

        def then(outcome: Any) -> None:
            self._forget(key, flight)
            stored(outcome)

        store.queue_put(settlements(self.facility), key, entry, state.ttl_ms, token, then)

    def release(self, state: RequestState, *, failed: bool) -> None:
        """Free the lock ``state`` holds, as a settlement (``failed``: its upstream call failed;
        leave the short "failed" mark so other replicas stop waiting too)."""
        token, state.token = state.token, ""
        store = self.store
        if not token or self.facility is None or not isinstance(store, RedisStore):
            return
        if not self.policy.available():
            return  # the lock expires by itself (coalesce_wait_seconds)
        queue = settlements(self.facility)
        store.queue_release(queue, state.key, token, failed, self._settled("release"))

    def _forget(self, key: str, flight: asyncio.Future[Entry | None] | None) -> None:
        if flight is not None and self.flights.get(key) is flight:
            del self.flights[key]

    def _token(self) -> str:
        return f"{self._token_prefix}{next(self._tokens):x}"

    # --- single flight ------------------------------------------------------------------------

    async def obtain(self, state: RequestState, ctx: RequestContext) -> Entry | None:
        """The cached answer for ``state.key``, or None: then the caller calls the upstream
        (``state.flight`` set: it leads an in-process flight; ``state.token``: it holds the
        Redis fill lock).

        The first Redis lookup travels with the request's deferred admission calls. Nothing is
        answered, and nothing waited for, before the admission's outcome is known: a request
        that a deferred admission refuses (rate limited, over budget) raises that refusal here,
        having freed at once whatever lock its lookup took."""
        key = state.key
        batch = self.batch(ctx)
        if not self.settings.coalesce:
            status, entry = await self._lookup(key, state.ttl_ms, "", batch)
            await flush_request(ctx)
            return entry if status == HIT else None
        flight = self.flights.get(key)
        if flight is not None and not _stale(flight, state.ttl_ms):
            await flush_request(ctx)  # a refused request does not wait (no extra round trip)
            return await self._wait(flight, state)
        flight = asyncio.get_running_loop().create_future()
        self.flights[key] = flight
        state.flight = flight
        try:
            entry = await self._lead(state, batch, ctx)
        except BaseException:
            # Refused, cancelled or broken before the upstream was called: free the lock (no
            # "failed" mark, the next arrival may lead) and let the waiters go on.
            self.settle(state, None)
            self.release(state, failed=False)
            raise
        if entry is not None:
            self.settle(state, entry)
        return entry

    async def _wait(
        self, flight: asyncio.Future[Entry | None], state: RequestState
    ) -> Entry | None:
        try:
            entry = await asyncio.wait_for(
                asyncio.shield(flight), self.settings.coalesce_wait_seconds
            )
        except TimeoutError:
            log.info("response_cache_coalesce_timeout key=%s", state.key)
            # Whatever held the flight up, later requests must not wait on it again.
            if self.flights.get(state.key) is flight:
                del self.flights[state.key]
            return None
        if entry is not None:
            COALESCED.inc()
        return entry

    async def _lead(
        self, state: RequestState, batch: RequestBatch | None, ctx: RequestContext
    ) -> Entry | None:
        """This request leads the in-process flight: look up, and across replicas wait for
        whoever holds the Redis fill lock."""
        key = state.key
        token = self._token()
        locking = self.redis
        # Held from the ask on, so a request cancelled during a lookup still frees the lock.
        state.token = token if locking else ""
        status, entry = await self._lookup(key, state.ttl_ms, token, batch)
        state.token = token if locking and status == LEAD else ""
        await flush_request(ctx)  # the admission's refusal, if any (no extra round trip)
        if status != WAIT:
            return entry if status == HIT else None
        deadline = time.monotonic() + self.settings.coalesce_wait_seconds
        delay = _POLL_FIRST
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)
            state.token = token
            status, entry = await self._lookup(key, state.ttl_ms, token)
            state.token = token if status == LEAD else ""
            if status == HIT:
                COALESCED.inc()
                return entry
            if status != WAIT:
                return None
        log.info("response_cache_coalesce_timeout key=%s", key)
        return None

    def settle(self, state: RequestState, entry: Entry | None) -> None:
        """End the flight ``state`` leads: waiters get ``entry`` (None: call the upstream)."""
        flight = state.flight
        if flight is None:
            return
        state.flight = None
        if self.flights.get(state.key) is flight:
            del self.flights[state.key]
        if not flight.done():
            flight.set_result(entry)

    async def close(self) -> None:
        for flight in self.flights.values():
            if not flight.done():
                flight.set_result(None)
        self.flights.clear()
        await self.store.close()
        if self.facility is not None:
            await self.facility.release(NAME)

    async def check(self) -> str:
        """The ``/readyz`` line: the cache never stops traffic, so never ``error``."""
        if not self.redis:
            return "ok"
        try:
            await self.store.ping()
        except BACKEND_ERRORS as exc:
            error = describe(exc, typed=True)
            return f"degraded: response cache cannot reach Redis ({error}); serving uncached"
        return "ok"
