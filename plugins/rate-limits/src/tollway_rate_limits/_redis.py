"""The Redis backend: one ``EVALSHA`` per admission decision, cluster-safe key names.

The hooks do not await these scripts one by one: an admission is *deferred* to the request's
Redis batch and a settlement *queued* (:mod:`tollway.redis_batch`), so this module builds each
call's keys and arguments (:meth:`RedisStore.acquire_call`, :meth:`RedisStore.heal_call`,
:meth:`RedisStore.settle_call`) and reads the replies (:meth:`RedisStore.decision`). The direct
methods (:meth:`RedisStore.acquire`, :meth:`RedisStore.heal`, :meth:`RedisStore.settle`) are
for the rare paths that need an answer at once (putting back a journal after Redis lost its
data) and for tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from tollway.redis import LUA_NOW_MS, RedisClient, Script
from tollway_rate_limits._journal import DayCount, Restore
from tollway_rate_limits._window import Decision, Spec

__all__ = [
    "ACQUIRE_LUA",
    "HEAL_LUA",
    "SETTLE_LUA",
    "Call",
    "HealFirst",
    "RedisStore",
]

ACQUIRE_LUA = LUA_NOW_MS + files("tollway_rate_limits").joinpath("acquire.lua").read_text()
SETTLE_LUA = files("tollway_rate_limits").joinpath("settle.lua").read_text()
HEAL_LUA = LUA_NOW_MS + files("tollway_rate_limits").joinpath("heal.lua").read_text()

#: One script call: its keys and its arguments.
Call = tuple[list[str], list[str | int]]


class HealFirst(Exception):
    """The admission script asks this replica to put back its journal for the scope first
    (its field in the scope's epoch hash is gone: Redis lost its data)."""


class RedisStore:
    """Runs ``acquire.lua`` / ``settle.lua`` / ``heal.lua``; same semantics as
    :class:`~tollway_rate_limits._window.LocalStore`."""

    def __init__(self, client: RedisClient, deadline_seconds: float) -> None:
        self.client = client
        self.deadline = deadline_seconds
        self.acquire_script = Script(client, ACQUIRE_LUA)
        self.settle_script = Script(client, SETTLE_LUA)
        self.heal_script = Script(client, HEAL_LUA)

    # --- the calls ---------------------------------------------------------------------------

    @staticmethod
    def acquire_call(
        specs: Sequence[Spec],
        member_id: str,
        window_ms: int,
        now_ms: int | None = None,
        *,
        node_id: str = "",
        epoch: str = "",
    ) -> Call:
        """``acquire.lua``'s keys and arguments for one decision. With ``node_id`` and the
        scope's ``epoch`` hash, the reply may ask to put back the journal first."""
        keys: list[str] = []
        args: list[str | int] = ["" if now_ms is None else now_ms, member_id, window_ms, len(specs)]
        for spec in specs:
            keys.extend(spec.keys)
            args.extend(("l" if spec.kind == "log" else "d", spec.limit, spec.cost))
        if node_id and epoch:
            keys.append(epoch)
            args.append(node_id)
        return keys, args

    @staticmethod
    def decision(reply: Any, epoch: str = "") -> Decision:
        """``acquire.lua``'s reply as a :class:`Decision`; raises :class:`HealFirst` when the
        replica must put back its journal for the scope first."""
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

    @staticmethod
    def heal_call(
        epoch: str,
        node_id: str,
        logs: dict[tuple[str, str], Restore],
        window_ms: int,
        *,
        lost: bool,
        days: dict[str, DayCount] | None = None,
        only_if_lost: bool = False,
    ) -> Call:
        """``heal.lua``'s keys and arguments: put back one scope's journal (its logs' entries
        and its day counters' counts). ``lost``: Redis lost its data (placeholders for the
        other replicas' admissions are due; the script also finds that out by itself).
        ``only_if_lost``: nothing was admitted without Redis, so put back only if the script
        finds the scope's data lost. The reply is the weight Redis did not have."""
        keys: list[str] = [epoch]
        mode = 1 if lost else 2 if only_if_lost else 0
        args: list[str | int] = ["", node_id, window_ms, mode, len(logs)]
        for (z, t), restore in logs.items():
            keys.extend((z, t, f"{z}:h"))
            args.extend((restore.seen_ms, restore.seen_used, len(restore.entries)))
            for at, name in restore.entries:
                args.extend((at, name))
        days = days or {}
        args.append(len(days))
        for h, count in days.items():
            keys.append(h)
            args.extend((count.day, count.own, count.seen))
        return keys, args

    @staticmethod
    def settle_call(keys: Sequence[str], old: str, new: str, delta: int, window_ms: int) -> Call:
        """``settle.lua``'s keys and arguments: replace a tpm reservation's weight (``new``
        empty: release it). The reply is 1 when settled, 0 when the entry already left."""
        return list(keys), [old, new, delta, window_ms]

    # --- direct calls (one round trip each) --------------------------------------------------

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
        """One decision now (see :meth:`acquire_call` and :meth:`decision`)."""
        keys, args = self.acquire_call(
            specs, member_id, window_ms, now_ms, node_id=node_id, epoch=epoch
        )
        async with asyncio.timeout(self.deadline):
            reply = await self.acquire_script(keys=keys, args=args)
        return self.decision(reply, epoch)

    async def heal(
        self,
        epoch: str,
        node_id: str,
        logs: dict[tuple[str, str], Restore],
        window_ms: int,
        *,
        lost: bool,
        days: dict[str, DayCount] | None = None,
    ) -> int:
        """Put back one scope's journal now (see :meth:`heal_call`)."""
        keys, args = self.heal_call(epoch, node_id, logs, window_ms, lost=lost, days=days)
        async with asyncio.timeout(self.deadline):
            return int(await self.heal_script(keys=keys, args=args))

    async def settle(
        self, keys: Sequence[str], old: str, new: str, delta: int, window_ms: int
    ) -> bool:
        """Settle one reservation now (see :meth:`settle_call`)."""
        k, args = self.settle_call(keys, old, new, delta, window_ms)
        async with asyncio.timeout(self.deadline):
            return bool(await self.settle_script(keys=k, args=args))

    async def ping(self) -> None:
        async with asyncio.timeout(self.deadline):
            await self.client.ping()
