"""The Redis backend: one ``EVALSHA`` per admission decision, cluster-safe key names."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from importlib.resources import files

from redis.asyncio import RedisCluster

from tollway.redis import BACKEND_ERRORS, LUA_NOW_MS, RedisClient, Script
from tollway_rate_limits._journal import Restore
from tollway_rate_limits._window import Decision, Spec

__all__ = [
    "ACQUIRE_LUA",
    "HEAL_LUA",
    "SETTLE_BATCH_SECONDS",
    "SETTLE_LUA",
    "HealFirst",
    "RedisStore",
]

ACQUIRE_LUA = LUA_NOW_MS + files("tollway_rate_limits").joinpath("acquire.lua").read_text()
SETTLE_LUA = files("tollway_rate_limits").joinpath("settle.lua").read_text()
HEAL_LUA = LUA_NOW_MS + files("tollway_rate_limits").joinpath("heal.lua").read_text()


class HealFirst(Exception):
    """The admission script asks this replica to put back its journal for the scope first
    (its field in the scope's epoch hash is gone: Redis lost its data)."""


#: Settlements wait this long to share one pipelined round trip (a tpm correction that lands
#: 50 ms later changes no decision worth having; the reservation counted meanwhile).
SETTLE_BATCH_SECONDS = 0.05
_SETTLE_BATCH_MAX = 500


class RedisStore:
    """Runs ``acquire.lua`` / ``settle.lua``; same semantics as :class:`LocalStore`.

    Settlements are off the request path, so they are batched (:meth:`queue_settle`): every
    :data:`SETTLE_BATCH_SECONDS` one pipeline carries them all. redis-py's per-command cost
    (pool, retry wrapper, encoding) was a fifth of a fully loaded gateway's event-loop time
    with one ``EVALSHA`` for the admission and one for the settlement of every request.
    """

    def __init__(
        self,
        client: RedisClient,
        deadline_seconds: float,
        on_settle_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.client = client
        self.deadline = deadline_seconds
        self._acquire = Script(client, ACQUIRE_LUA)
        self._settle = Script(client, SETTLE_LUA)
        self._heal = Script(client, HEAL_LUA)
        self._pending: list[tuple[Sequence[str], list[str | int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.on_settle_error = on_settle_error
        # A cluster pipeline splits by slot and has no script registry: settle one by one.
        self.batching = not isinstance(client, RedisCluster)

    async def acquire(
        self,
        specs: Sequence[Spec],
        member_id: str,
        window_ms: int,
        now_ms: int | None = None,
        *,
        node_id: str = "",
        epoch: str = "",
    ) -> Decision:
        """One decision. With ``node_id`` and the scope's ``epoch`` hash: raises
        :class:`HealFirst` when this replica must put back its journal first."""
        keys: list[str] = []
        args: list[str | int] = ["" if now_ms is None else now_ms, member_id, window_ms, len(specs)]
        for spec in specs:
            keys.extend(spec.keys)
            args.extend(("l" if spec.kind == "log" else "d", spec.limit, spec.cost))
        if node_id and epoch:
            keys.append(epoch)
            args.append(node_id)
        async with asyncio.timeout(self.deadline):
            reply = await self._acquire(keys=keys, args=args)
        if int(reply[0]) == 2:
            raise HealFirst(epoch)
        if int(reply[0]) == 1:
            return Decision(True, int(reply[1]), remaining=tuple(int(r) for r in reply[2:]))
        return Decision(
            False,
            int(reply[1]),
            index=int(reply[2]) - 1,
            retry_ms=int(reply[3]),
            used=int(reply[4]),
        )

    async def heal(
        self,
        epoch: str,
        node_id: str,
        logs: dict[tuple[str, str], Restore],
        window_ms: int,
        *,
        lost: bool,
    ) -> int:
        """Put back one scope's journal (heal.lua); the weight Redis did not have. ``lost``:
        Redis lost its data (placeholders for the other replicas' entries are due)."""
        keys: list[str] = [epoch]
        args: list[str | int] = ["", node_id, window_ms, 1 if lost else 0, len(logs)]
        for (z, t), restore in logs.items():
            keys.extend((z, t, f"{z}:h"))
            args.extend((restore.seen_ms, restore.seen_used, len(restore.entries)))
            for at, name in restore.entries:
                args.extend((at, name))
        async with asyncio.timeout(self.deadline):
            return int(await self._heal(keys=keys, args=args))

    async def settle(
        self, keys: Sequence[str], old: str, new: str, delta: int, window_ms: int
    ) -> bool:
        async with asyncio.timeout(self.deadline):
            reply = await self._settle(keys=list(keys), args=[old, new, delta, window_ms])
        return bool(reply)

    def queue_settle(
        self, keys: Sequence[str], old: str, new: str, delta: int, window_ms: int
    ) -> None:
        """Settle soon, in the next batch (see the class doc)."""
        self._pending.append((keys, [old, new, delta, window_ms]))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(SETTLE_BATCH_SECONDS)
        await self.flush_settles()

    async def flush_settles(self) -> None:
        """Send every queued settlement now (also at shutdown). A batch Redis does not take
        is dropped: those reservations simply expire with their window."""
        while self._pending:
            batch = self._pending[:_SETTLE_BATCH_MAX]
            del self._pending[:_SETTLE_BATCH_MAX]
            try:
                async with asyncio.timeout(self.deadline):
                    results = await self._settle.pipeline(batch)
                errors = [r for r in results if isinstance(r, Exception)]
                if errors:
                    raise errors[0]
            except BACKEND_ERRORS as exc:
                if self.on_settle_error is not None:
                    self.on_settle_error(exc)

    async def ping(self) -> None:
        async with asyncio.timeout(self.deadline):
            await self.client.ping()

    async def close(self) -> None:
        """Send what is queued and stop (the client is the gateway's: not closed here)."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        await self.flush_settles()
