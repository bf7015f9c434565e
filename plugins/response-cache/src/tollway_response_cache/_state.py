"""Per-gateway runtime (store, in-process flights) and per-request state."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from tollway.redis import BACKEND_ERRORS as BACKEND_ERRORS
from tollway.redis import FailurePolicy, RedisFacility, describe
from tollway_response_cache._entry import Entry
from tollway_response_cache._metrics import COALESCED, REDIS_ERRORS
from tollway_response_cache._settings import NAME, ResponseCacheSettings
from tollway_response_cache._store import ALONE, HIT, LEAD, WAIT, MemoryStore, RedisStore

__all__ = ["RequestState", "Runtime"]

log = logging.getLogger("tollway.response_cache")

_POLL_FIRST = 0.01
_POLL_MAX = 0.2


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

    @property
    def redis(self) -> bool:
        return isinstance(self.store, RedisStore)

    # --- the backend, failing open ---------------------------------------------------------

    async def _lookup(self, key: str, max_age_ms: int, token: str) -> tuple[str, Entry | None]:
        if not self.policy.available():
            return ALONE, None
        try:
            found = await self.store.lookup(key, max_age_ms, token, self.lock_ms)
        except BACKEND_ERRORS as exc:
            self.policy.failed(exc, "lookup")
            return ALONE, None
        self.policy.ok()
        return found

    async def put(self, key: str, entry: Entry, ttl_ms: int, token: str) -> None:
        if not self.policy.available():
            return
        try:
            await self.store.put(key, entry, ttl_ms, token)
        except BACKEND_ERRORS as exc:
            self.policy.failed(exc, "store")
        else:
            self.policy.ok()

    async def release(self, key: str, token: str) -> None:
        if not token or not self.policy.available():
            return
        try:
            await self.store.release(key, token)
        except BACKEND_ERRORS as exc:
            self.policy.failed(exc, "release")

    # --- single flight ------------------------------------------------------------------------

    async def obtain(self, state: RequestState) -> Entry | None:
        """The cached answer for ``state.key``, or None: then the caller calls the upstream
        (``state.flight`` set: it leads an in-process flight; ``state.token``: it holds the
        Redis fill lock)."""
        key = state.key
        if not self.settings.coalesce:
            status, entry = await self._lookup(key, state.ttl_ms, "")
            return entry if status == HIT else None
        flight = self.flights.get(key)
        if flight is not None:
            return await self._wait(flight, state)
        flight = asyncio.get_running_loop().create_future()
        self.flights[key] = flight
        state.flight = flight
        try:
            entry = await self._lead(state)
        except BaseException:
            self.settle(state, None)
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

    async def _lead(self, state: RequestState) -> Entry | None:
        """This request leads the in-process flight: look up, and across replicas wait for
        whoever holds the Redis fill lock."""
        key = state.key
        token = secrets.token_hex(8)
        status, entry = await self._lookup(key, state.ttl_ms, token)
        if status == HIT:
            return entry
        if status == LEAD:
            state.token = token if self.redis else ""
            return None
        if status == ALONE:
            return None
        assert status == WAIT
        deadline = time.monotonic() + self.settings.coalesce_wait_seconds
        delay = _POLL_FIRST
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)
            status, entry = await self._lookup(key, state.ttl_ms, token)
            if status == HIT:
                COALESCED.inc()
                return entry
            if status == LEAD:
                state.token = token
                return None
            if status == ALONE:
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
