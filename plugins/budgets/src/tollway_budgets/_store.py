"""Spend counters: in-process (one gateway process, no Redis) or in Redis (shared by every
replica), with the same semantics — one atomic admission over all of a request's counters.

A counter holds ``spent`` (settled micro-USD since it was seeded, plus the seed) and
``reserved`` (the sum of in-flight requests' reservations, each also recorded with its expiry
so a crashed replica's reservations lapse). Admission refuses when a ``block`` budget's
``spent + reserved >= limit``; otherwise it reserves the request's estimate on every counter.
Settlement releases the reservation and adds the actual cost. A reservation that outlived its
lease (its request never settled: the replica died) is *reclaimed* by the next admission: its
amount moves to ``spent`` — the request is billed at its reservation, an upper bound — and a
late settlement corrects that to the actual cost. A counter that does not exist yet must first
be *seeded* with the spend the ledger already holds for its window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import attrs

from tollway.redis import LUA_NOW_MS, RedisClient, Script
from tollway_budgets._budgets import Counter

__all__ = ["Admission", "LocalStore", "RedisStore"]

ADMIT_LUA = LUA_NOW_MS + files("tollway_budgets").joinpath("admit.lua").read_text()
SETTLE_LUA = files("tollway_budgets").joinpath("settle.lua").read_text()
SEED_LUA = files("tollway_budgets").joinpath("seed.lua").read_text()
HEAL_LUA = files("tollway_budgets").joinpath("heal.lua").read_text()
RENEW_LUA = LUA_NOW_MS + files("tollway_budgets").joinpath("renew.lua").read_text()


@attrs.frozen
class Admission:
    """The outcome of one admission.

    ``status``: ``ok`` (reserved on every counter), ``blocked`` (``index`` names the counter at
    or over its limit; nothing reserved) or ``seed`` (``missing`` counters must be seeded
    first; nothing reserved). ``spent``/``reserved`` are per counter, before this request's
    reservation (for ``blocked``: only the blocking counter's). ``reseed``: provisional
    counters this caller should seed again.
    """

    status: str
    spent: tuple[int, ...] = ()
    reserved: tuple[int, ...] = ()
    index: int = -1
    missing: tuple[int, ...] = ()
    reseed: tuple[int, ...] = ()
    now_ms: int = 0
    #: Reservations of other requests whose lease lapsed, reclaimed by this admission:
    #: (request id, amount, the request's description as JSON or "").
    reclaimed: tuple[tuple[str, int, str], ...] = ()


@attrs.define
class _LocalCounter:
    spent: int
    expire_at_ms: int
    reserved: int = 0
    #: request id → (amount, expires at ms)
    reservations: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    #: request id → amount, of reservations reclaimed (billed at their amount) unsettled.
    reclaimed: dict[str, int] = attrs.field(factory=dict)
    #: 0, or when a provisional counter should be seeded again (ms).
    provisional_until_ms: int = 0
    #: The last admission, and when the current run of admissions (none more than a lease
    #: apart) began (ms): reservations are reclaimed only after a whole lease of use.
    last_admission_ms: int = 0
    in_use_since_ms: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LocalStore:
    """Counters in this process (a single gateway process without Redis)."""

    def __init__(self) -> None:
        self.counters: dict[str, _LocalCounter] = {}

    def admit(
        self,
        counters: Sequence[Counter],
        amounts: Sequence[int],
        request_id: str,
        now_ms: int,
        ttl_ms: int,
        retry_ms: int,
    ) -> Admission:
        found = [self.counters.get(c.ident) for c in counters]
        missing = tuple(i for i, c in enumerate(found) if c is None)
        if missing:
            return Admission("seed", missing=missing, now_ms=now_ms)
        spent, reserved = [], []
        taken: list[tuple[str, int, str]] = []
        for i, (spec, counter) in enumerate(zip(counters, found, strict=True)):
            assert counter is not None
            if now_ms - counter.last_admission_ms > ttl_ms:
                counter.in_use_since_ms = now_ms
            counter.last_admission_ms = now_ms
            in_use = now_ms - counter.in_use_since_ms >= ttl_ms
            expired = [
                r for r, (_, exp) in counter.reservations.items() if in_use and exp <= now_ms
            ]
            for r in expired:
                amount = counter.reservations.pop(r)[0]
                counter.reserved -= amount
                counter.spent += amount
                counter.reclaimed[r] = amount
                taken.append((r, amount, ""))
            s, res = counter.spent, max(0, counter.reserved)
            spent.append(s)
            reserved.append(res)
            if spec.budget.block and s + res >= spec.budget.limit:
                return Admission(
                    "blocked", (s,), (res,), index=i, now_ms=now_ms, reclaimed=tuple(taken)
                )
        reseed = []
        for i, (spec, counter, amount) in enumerate(zip(counters, found, amounts, strict=True)):
            assert counter is not None
            counter.expire_at_ms = max(counter.expire_at_ms, spec.expire_at_ms)
            if amount > 0:
                counter.reserved += amount
                counter.reservations[request_id] = (amount, now_ms + ttl_ms)
            if counter.provisional_until_ms and counter.provisional_until_ms <= now_ms:
                counter.provisional_until_ms = now_ms + retry_ms
                reseed.append(i)
        return Admission(
            "ok",
            tuple(spent),
            tuple(reserved),
            reseed=tuple(reseed),
            now_ms=now_ms,
            reclaimed=tuple(taken),
        )

    def settle(self, idents: Sequence[str], request_id: str, costs: Sequence[int]) -> None:
        for ident, cost in zip(idents, costs, strict=True):
            counter = self.counters.get(ident)
            if counter is None:
                continue
            held = counter.reservations.pop(request_id, None)
            if held is not None:
                counter.reserved -= held[0]
            elif request_id in counter.reclaimed:
                cost -= counter.reclaimed.pop(request_id)
            else:
                continue  # settled already: a retry changes nothing
            counter.spent += cost

    def seed(
        self,
        counters: Sequence[Counter],
        spent: Sequence[int],
        provisional_until_ms: int,
        *,
        reseed: bool,
    ) -> None:
        for spec, value in zip(counters, spent, strict=True):
            counter = self.counters.get(spec.ident)
            if not reseed:
                if counter is None:
                    self.counters[spec.ident] = _LocalCounter(
                        value, spec.expire_at_ms, provisional_until_ms=provisional_until_ms
                    )
            elif counter is not None and counter.provisional_until_ms:
                counter.spent = value
                counter.provisional_until_ms = provisional_until_ms

    def purge(self, now_ms: int) -> int:
        """Forget counters whose window is long over (and nothing is reserved on)."""
        old = [
            k for k, c in self.counters.items() if c.expire_at_ms <= now_ms and not c.reservations
        ]
        for k in old:
            del self.counters[k]
        return len(old)

    def spent(self, ident: str) -> int | None:
        counter = self.counters.get(ident)
        return None if counter is None else counter.spent


class RedisStore:
    """The same operations as :class:`LocalStore`, one ``EVALSHA`` each, shared by replicas."""

    def __init__(self, client: RedisClient, deadline_seconds: float) -> None:
        self.client = client
        self.deadline = deadline_seconds
        self._admit = Script(client, ADMIT_LUA)
        self._settle = Script(client, SETTLE_LUA)
        self._seed = Script(client, SEED_LUA)
        self._renew = Script(client, RENEW_LUA)
        self._heal = Script(client, HEAL_LUA)

    @property
    def admit_script(self) -> Script:
        """admit.lua (for a request's batch, :mod:`tollway.redis_batch`)."""
        return self._admit

    @property
    def settle_script(self) -> Script:
        """settle.lua (for the settlement queue, :mod:`tollway.redis_batch`)."""
        return self._settle

    @staticmethod
    def admit_call(
        counters: Sequence[Counter],
        amounts: Sequence[int],
        request_id: str,
        now_ms: int | None,
        ttl_ms: int,
        retry_ms: int,
        meta: str | bytes = "",
    ) -> tuple[list[str], list[Any]]:
        """admit.lua's keys and arguments (see :meth:`admit`)."""
        keys: list[str] = []
        args: list[Any] = ["" if now_ms is None else now_ms, request_id, ttl_ms, retry_ms]
        args.extend((len(counters), meta))
        for spec, amount in zip(counters, amounts, strict=True):
            keys.extend(spec.keys)
            args.extend(spec.admit_args)
            args.append(amount)
            args.append(spec.expire_at_ms)
        return keys, args

    @staticmethod
    def admission(reply: Any) -> Admission:
        """admit.lua's reply as an :class:`Admission`."""
        code, now = int(reply[0]), int(reply[1])
        raw = reply[2] or []
        reclaimed = tuple(
            (_text(raw[i]), int(raw[i + 1]), _text(raw[i + 2])) for i in range(0, len(raw), 3)
        )
        rest = reply[3:]
        if code == 2:
            missing = tuple(int(i) - 1 for i in rest)
            return Admission("seed", missing=missing, now_ms=now, reclaimed=reclaimed)
        if code == 0:
            return Admission(
                "blocked",
                (int(rest[1]),),
                (int(rest[2]),),
                index=int(rest[0]) - 1,
                now_ms=now,
                reclaimed=reclaimed,
            )
        values = [int(v) for v in rest]
        return Admission(
            "ok",
            tuple(values[0::3]),
            tuple(values[1::3]),
            reseed=tuple(i for i, flag in enumerate(values[2::3]) if flag),
            now_ms=now,
            reclaimed=reclaimed,
        )

    async def admit(
        self,
        counters: Sequence[Counter],
        amounts: Sequence[int],
        request_id: str,
        now_ms: int | None,
        ttl_ms: int,
        retry_ms: int,
        meta: str | bytes = "",
    ) -> Admission:
        """One admission now, in a round trip of its own. ``ttl_ms``: the reservation's lease
        (renewed by :meth:`renew` while the request runs); ``meta``: the request's
        description, handed back if it is ever reclaimed. (A request's admission goes in its
        batch instead: :meth:`admit_call`, :meth:`admission`.)"""
        keys, args = self.admit_call(counters, amounts, request_id, now_ms, ttl_ms, retry_ms, meta)
        async with asyncio.timeout(self.deadline):
            reply = await self._admit(keys=keys, args=args)
        return self.admission(reply)

    async def renew(self, leases: dict[str, list[str]], lease_ms: int) -> int:
        """Renew the leases of in-flight reservations, ``{zset key: [request id, ...]}``, in
        one pipeline; how many were still there."""
        calls = [([z], ["", lease_ms, *rids]) for z, rids in leases.items()]
        async with asyncio.timeout(self.deadline):
            results = await self._renew.pipeline(calls)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(int(r) for r in results)

    @staticmethod
    def settle_call(
        counters: Sequence[tuple[str, str]], request_id: str, costs: Sequence[int]
    ) -> tuple[list[str], list[Any]]:
        """settle.lua's keys and arguments (see :meth:`settle`)."""
        keys: list[str] = []
        for hash_key, zset_key in counters:
            keys.append(hash_key)
            keys.append(zset_key)
        return keys, [request_id, len(counters), *costs]

    async def settle(
        self, counters: Sequence[tuple[str, str]], request_id: str, costs: Sequence[int]
    ) -> None:
        """Settle now, in a round trip of its own (a request's settlement is queued instead:
        :meth:`settle_call`, :func:`tollway.redis_batch.settlements`)."""
        keys, args = self.settle_call(counters, request_id, costs)
        async with asyncio.timeout(self.deadline):
            await self._settle(keys=keys, args=args)

    async def seed(
        self,
        counters: Sequence[Counter],
        spent: Sequence[int],
        provisional_until_ms: int,
        *,
        reseed: bool,
        read_at_ms: int | None = None,
    ) -> None:
        """``read_at_ms``: when the ledger sums in ``spent`` were read (recorded in a counter
        this creates, for :meth:`replay`)."""
        args: list[Any] = [len(counters)]
        for spec, value in zip(counters, spent, strict=True):
            args.extend((value, spec.expire_at_ms, provisional_until_ms, "r" if reseed else "i"))
        if read_at_ms is not None:
            args.append(read_at_ms)
        async with asyncio.timeout(self.deadline):
            await self._seed(keys=[c.hash_key for c in counters], args=args)

    async def replay(
        self, marker: str, spend: dict[str, list[tuple[int, int]]], margin_ms: int
    ) -> int:
        """Add journaled fail-open spend to the counters that kept their data (heal.lua), in
        one pipeline; the micro-USD added."""
        calls: list[tuple[list[str], list[Any]]] = []
        for key, seconds in spend.items():
            args: list[Any] = [marker, margin_ms]
            for until_ms, amount in seconds:
                args.extend((until_ms, amount))
            calls.append(([key], args))
        async with asyncio.timeout(self.deadline):
            results = await self._heal.pipeline(calls)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(int(r) for r in results)

    async def ping(self) -> None:
        async with asyncio.timeout(self.deadline):
            await self.client.ping()
