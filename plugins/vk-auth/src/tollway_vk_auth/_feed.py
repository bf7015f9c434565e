"""The change feed: a long poll on the control plane's ``changes`` that evicts cached keys.

A revoke, rotation, update, deletion, provider change, policy or budget change reaches the
control plane's event table; its long poll answers within ~200 ms, and the evictions below run
before the next request — well inside the 2 s the CLI promises.

On errors the loop backs off (0.2 s doubling to 5 s) and keeps going; it logs at most once per
30 s, and not at all during the first seconds of start-up (the embedded control plane is served
by this very process, which is not listening yet when the loop starts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tollway_vk_auth._cache import AuthCache
from tollway_vk_auth._client import ChangeEvent, ControlPlaneClient, ControlPlaneUnavailable
from tollway_vk_auth._l2 import L2

__all__ = ["ChangeFeed"]

log = logging.getLogger("tollway.vk_auth")

_BACKOFF_START = 0.2
_BACKOFF_MAX = 5.0
_LOG_EVERY = 30.0
_STARTUP_QUIET = 10.0
_DRAIN_CHECK = 0.25


class _Draining(Exception):
    pass


class ChangeFeed:
    """Runs :meth:`run` as a task; :meth:`apply` is the event → eviction mapping."""

    def __init__(
        self,
        client: ControlPlaneClient,
        cache: AuthCache,
        l2: L2 | None,
        *,
        timeout_s: int = 25,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.client = client
        self.cache = cache
        self.l2 = l2
        self.timeout_s = timeout_s
        self.draining = draining
        self.cursor: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.connected = False
        self.failing = False
        self.last_error: str | None = None
        self._started_at = time.monotonic()
        self._last_log = float("-inf")
        self._suppressed = 0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()
        self.task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        self.stopping = True
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def died(self) -> str | None:
        """Why the loop stopped on its own (None while it runs or after :meth:`stop`)."""
        task = self.task
        if task is None or not task.done() or self.stopping or self.draining():
            return None
        if task.cancelled():
            return "it was cancelled"
        exc = task.exception()
        return f"{type(exc).__name__}: {exc}" if exc is not None else "it returned"

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = _BACKOFF_START
        while not self.draining():
            try:
                if self.cursor is None:
                    cursor, events = await self._poll(-1, 0)
                else:
                    cursor, events = await self._poll(self.cursor, self.timeout_s)
            except _Draining:
                return
            except ControlPlaneUnavailable as exc:
                self._failed(exc.reason, exc.error_class, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop revocations for good
                self._failed(f"{type(exc).__name__}: {exc}", "internal", backoff, exc=exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_START
            await self._succeeded(cursor, events)

    async def _poll(self, since: int, timeout_s: int) -> tuple[int, list[ChangeEvent]]:
        """One long poll, abandoned as soon as the gateway starts draining (so SIGTERM is not
        held up by a request to our own embedded control plane)."""
        poll = asyncio.ensure_future(self.client.changes(since, timeout_s))
        try:
            while True:
                done, _ = await asyncio.wait({poll}, timeout=_DRAIN_CHECK)
                if done:
                    return poll.result()
                if self.draining():
                    raise _Draining()
        finally:
            if not poll.done():
                poll.cancel()
                try:
                    await poll
                except (asyncio.CancelledError, Exception):
                    pass

    def _failed(
        self, reason: str, error_class: str, backoff: float, exc: BaseException | None = None
    ) -> None:
        self.failing = True
        self.last_error = reason
        self.cache.note_unreachable(reason)
        now = time.monotonic()
        if not self.connected and now - self._started_at < _STARTUP_QUIET:
            return
        if now - self._last_log < _LOG_EVERY:
            self._suppressed += 1
            return
        self._last_log = now
        log.warning(
            "auth_cache_feed_error error=%s error_class=%s retry_in=%.1fs suppressed=%d",
            reason,
            error_class,
            backoff,
            self._suppressed,
            exc_info=exc,
            extra={
                "error": reason,
                "error_class": error_class,
                "retry_in_s": backoff,
                "suppressed": self._suppressed,
            },
        )
        self._suppressed = 0

    async def _succeeded(self, cursor: int, events: list[ChangeEvent]) -> None:
        recovered = self.failing and self.connected
        self.failing = False
        self.last_error = None
        first = not self.connected
        self.connected = True
        self.cache.note_reachable()
        if self.cursor is not None and cursor < self.cursor:
            # The control plane's event table went backwards (a new store): trust nothing.
            log.warning(
                "auth_cache_feed_reset old_cursor=%d new_cursor=%d",
                self.cursor,
                cursor,
                extra={"old_cursor": self.cursor, "new_cursor": cursor},
            )
            self.cache.evict_all()
            if self.l2 is not None:
                await self.l2.mark_all_stale(self.cache.clock())
        self.cursor = cursor if self.cursor is None else max(cursor, self.cursor)
        if events:
            await self.apply(events)
        if first:
            log.info(
                "auth_cache_feed_connected base_url=%s cursor=%d",
                self.client.base_url,
                cursor,
                extra={"base_url": self.client.base_url, "cursor": cursor},
            )
        elif recovered:
            n = self.cache.refresh_stale_served()
            log.info(
                "auth_cache_feed_recovered cursor=%d refreshing=%d",
                cursor,
                n,
                extra={"cursor": cursor, "refreshing": n},
            )

    async def apply(self, events: list[ChangeEvent]) -> None:
        """Evict what the events name: L1 at once (synchronously), then L2."""
        cache = self.cache
        l2_ops: list[tuple[str, str | None]] = []
        for event in events:
            kind = event.kind
            if kind == "budget_changed" and not event.vk_id:
                # A budget was created, changed, reset or deleted: any key's bundle may list
                # it. Revalidate everything (a 304 for keys it does not touch), but keep
                # serving cached keys if the control plane is unreachable — a budget change
                # is no revocation.
                dropped = None
                cache.revalidate_all()
                l2_ops.append(("stale", None))
            elif kind.startswith("vk_") or kind in ("policy_changed", "budget_changed"):
                if event.vk_id:
                    dropped = cache.evict_vk(event.vk_id)
                    l2_ops.append(("vk", event.vk_id))
                else:
                    dropped = None
                    cache.evict_all()
                    l2_ops.append(("all", None))
            elif kind == "provider_updated":
                if event.provider_id:
                    dropped = cache.evict_provider(event.provider_id)
                    l2_ops.append(("provider", event.provider_id))
                else:
                    dropped = None
                    cache.evict_all()
                    l2_ops.append(("all", None))
            else:
                log.debug("auth_cache_feed_unknown_event kind=%s", kind, extra={"kind": kind})
                continue
            log.info(
                "auth_cache_evict kind=%s vk_id=%s provider_id=%s entries=%s",
                kind,
                event.vk_id,
                event.provider_id,
                "all" if dropped is None else len(dropped),
                extra={
                    "kind": kind,
                    "vk_id": event.vk_id,
                    "provider_id": event.provider_id,
                    "entries": "all" if dropped is None else len(dropped),
                },
            )
        if self.l2 is None:
            return
        now = cache.clock()
        for op, ident in l2_ops:
            if op == "vk" and ident:
                await self.l2.evict_vk(ident)
            elif op == "provider" and ident:
                await self.l2.evict_provider(ident)
                await self.l2.mark_all_stale(now)
            else:
                await self.l2.mark_all_stale(now)
