"""The spend counters: the in-process store and the Redis store (real Redis, own key prefix)
must behave the same — seeding, atomic admission, settlement, expiring reservations."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis as redis_sync

from tollway import Principal
from tollway.redis import RedisOptions, connect
from tollway_budgets._budgets import Counter, counters_for, parse_budgets
from tollway_budgets._heal import Journal
from tollway_budgets._store import Admission, LocalStore, RedisStore

REDIS_URL = "redis://127.0.0.1:6379/0"
#: Now (the Redis keys expire with their window, in real time); reservations use NOW_MS.
AT = time.time_ns() // 1000
NOW_MS = AT // 1000
TTL_MS = 60_000
RETRY_MS = 30_000

KEY = Principal(
    key_id="vk_c",
    display_prefix="lw_vk_test_01ABCDE",
    organization_id="org_c",
    team_id="team_c",
    project_id="proj_c",
)


def redis_available() -> bool:
    try:
        redis_sync.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping()
    except redis_sync.RedisError:
        return False
    return True


class Store:
    """LocalStore and RedisStore behind one async interface."""

    def __init__(self, kind: str, prefix: str) -> None:
        self.kind = kind
        self.prefix = prefix
        self.local = LocalStore()
        self.redis: RedisStore | None = None
        if kind == "redis":
            self.redis = RedisStore(connect(RedisOptions(REDIS_URL)), 2.0)

    def counters(self, *budgets: dict[str, Any]) -> list[Counter]:
        return counters_for(parse_budgets(list(budgets), KEY), KEY, None, AT, self.prefix, 0)

    async def admit(
        self, counters: Sequence[Counter], amount: int, rid: str, now_ms: int = NOW_MS
    ) -> Admission:
        amounts = [amount] * len(counters)
        if self.redis is not None:
            return await self.redis.admit(counters, amounts, rid, now_ms, TTL_MS, RETRY_MS)
        return self.local.admit(counters, amounts, rid, now_ms, TTL_MS, RETRY_MS)

    async def settle(self, counters: Sequence[Counter], rid: str, cost: int) -> None:
        if self.redis is not None:
            await self.redis.settle(
                [(c.hash_key, c.zset_key) for c in counters], rid, [cost] * len(counters)
            )
        else:
            self.local.settle([c.ident for c in counters], rid, [cost] * len(counters))

    async def seed(
        self, counters: Sequence[Counter], spent: int, provisional: int = 0, reseed: bool = False
    ) -> None:
        values = [spent] * len(counters)
        if self.redis is not None:
            await self.redis.seed(counters, values, provisional, reseed=reseed)
        else:
            self.local.seed(counters, values, provisional, reseed=reseed)


@asynccontextmanager
async def store(kind: str) -> AsyncIterator[Store]:
    if kind == "redis" and not redis_available():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    prefix = f"tollway-test-budgets-{uuid.uuid4().hex[:10]}"
    s = Store(kind, prefix)
    try:
        yield s
    finally:
        if s.redis is not None:
            await s.redis.client.aclose()
            client = redis_sync.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)
            client.close()


KINDS = pytest.mark.parametrize("kind", ["local", "redis"])


def run(coro: Any) -> None:
    asyncio.run(coro)


@KINDS
def test_seed_then_reserve_then_settle(kind: str) -> None:
    async def body() -> None:
        async with store(kind) as s:
            counters = s.counters({"id": "b", "scope": "project", "limit_micro_usd": 1000})
            first = await s.admit(counters, 100, "r1")
            assert first.status == "seed" and first.missing == (0,)
            await s.seed(counters, 250)
            # A second 'init' seed (another replica, racing) changes nothing.
            await s.seed(counters, 999)
            ok = await s.admit(counters, 100, "r1")
            assert (ok.status, ok.spent, ok.reserved) == ("ok", (250,), (0,))
            second = await s.admit(counters, 100, "r2")
            assert (second.spent, second.reserved) == ((250,), (100,))
            await s.settle(counters, "r1", 40)
            third = await s.admit(counters, 0, "r3")
            assert (third.spent, third.reserved) == ((290,), (100,))
            await s.settle(counters, "r2", 60)
            await s.settle(counters, "r3", 0)
            final = await s.admit(counters, 0, "r4")
            assert (final.spent, final.reserved) == ((350,), (0,))

    run(body())


@KINDS
def test_block_when_spent_plus_reserved_reaches_the_limit(kind: str) -> None:
    async def body() -> None:
        async with store(kind) as s:
            block, warn = s.counters(
                {"id": "blk", "scope": "project", "limit_micro_usd": 1000},
                {"id": "wrn", "scope": "team", "limit_micro_usd": 10, "on_breach": "warn"},
            )
            await s.seed([block, warn], 900)
            # 900 < 1000: admitted, even though the estimate (500) would pass the limit.
            ok = await s.admit([block, warn], 500, "a")
            assert ok.status == "ok" and ok.spent == (900, 900)
            refused = await s.admit([block, warn], 1, "b")
            assert (refused.status, refused.index, refused.spent, refused.reserved) == (
                "blocked",
                0,
                (900,),
                (500,),
            )
            # The refused request reserved nothing anywhere.
            await s.settle([block, warn], "a", 50)
            after = await s.admit([warn], 0, "c")
            assert after.reserved == (0,) and after.spent == (950,)
            # A warn budget far over its limit never blocks.
            assert (await s.admit([warn], 5, "d")).status == "ok"
            # At exactly the limit a block budget refuses.
            assert (await s.admit([block], 1, "x")).status == "ok"
            await s.settle([block], "x", 50)
            assert (await s.admit([block], 0, "e")).status == "blocked"

    run(body())


@KINDS
def test_after_a_pause_longer_than_a_lease_nothing_is_reclaimed_at_once(kind: str) -> None:
    """A Redis outage stops every replica's renewals: after a pause longer than a lease,
    nothing is reclaimed for a whole lease of admissions (live replicas renew meanwhile)."""

    async def body() -> None:
        async with store(kind) as s:
            counters = s.counters({"id": "b", "scope": "project", "limit_micro_usd": 100})
            await s.seed(counters, 0)
            assert (await s.admit(counters, 100, "held")).status == "ok"
            first = await s.admit(counters, 1, "a", NOW_MS + 2 * TTL_MS)
            assert (first.status, first.reserved, first.reclaimed) == ("blocked", (100,), ())
            second = await s.admit(counters, 1, "b", NOW_MS + 2 * TTL_MS + 1)
            assert second.reclaimed == ()
            third = await s.admit(counters, 1, "c", NOW_MS + 3 * TTL_MS)
            assert [r for r, _, _ in third.reclaimed] == ["held"]

    run(body())


@KINDS
def test_reservations_of_crashed_requests_expire(kind: str) -> None:
    async def body() -> None:
        async with store(kind) as s:
            counters = s.counters({"id": "b", "scope": "project", "limit_micro_usd": 100})
            await s.seed(counters, 0)
            assert (await s.admit(counters, 100, "lost")).status == "ok"
            assert (await s.admit(counters, 1, "x", NOW_MS + 1)).status == "blocked"
            # The request never settles (its replica died): after its lease the reservation is
            # reclaimed, billed at its amount (an upper bound) and reported to the caller.
            later = await s.admit(counters, 1, "y", NOW_MS + TTL_MS + 1)
            assert (later.status, later.spent, later.reserved) == ("blocked", (100,), (0,))
            assert [(rid, amount) for rid, amount, _ in later.reclaimed] == [("lost", 100)]
            # A late settlement corrects it to the actual cost, releasing nothing twice; a
            # settlement retried (it had run after all) changes nothing.
            await s.settle(counters, "lost", 30)
            await s.settle(counters, "lost", 30)
            check = await s.admit(counters, 0, "z", NOW_MS + TTL_MS + 2)
            assert (check.spent, check.reserved, check.reclaimed) == ((30,), (0,), ())

    run(body())


@KINDS
def test_provisional_counters_are_seeded_again(kind: str) -> None:
    async def body() -> None:
        async with store(kind) as s:
            counters = s.counters({"id": "b", "scope": "project", "limit_micro_usd": 10_000})
            # The control plane did not answer: provisional, from what this replica knew.
            await s.seed(counters, 5, provisional=NOW_MS + 1000)
            early = await s.admit(counters, 10, "a")
            assert early.status == "ok" and early.reseed == ()
            due = await s.admit(counters, 10, "b", NOW_MS + 1000)
            assert due.reseed == (0,)
            # Only one caller is asked to re-seed until the retry interval passes.
            assert (await s.admit(counters, 0, "c", NOW_MS + 1001)).reseed == ()
            await s.seed(counters, 700, reseed=True)  # the ledger's sum, final now
            after = await s.admit(counters, 0, "d", NOW_MS + RETRY_MS + 5000)
            assert (after.spent, after.reserved, after.reseed) == ((700,), (20,), ())
            # A re-seed of a counter that is no longer provisional changes nothing.
            await s.seed(counters, 1, reseed=True)
            assert (await s.admit(counters, 0, "e")).spent == (700,)

    run(body())


@KINDS
def test_concurrent_admissions_are_atomic(kind: str) -> None:
    async def body() -> None:
        async with store(kind) as s:
            counters = s.counters(
                {"id": "b", "scope": "project", "limit_micro_usd": 1000},
                {"id": "o", "scope": "organization", "limit_micro_usd": 10**9},
            )
            await s.seed(counters, 0)
            results = await asyncio.gather(*(s.admit(counters, 10, f"r{i}") for i in range(300)))
            admitted = [r for r in results if r.status == "ok"]
            # Admitted while spent + reserved < 1000: exactly 100 reservations of 10.
            assert len(admitted) == 100
            assert sorted(r.reserved[0] for r in admitted) == list(range(0, 1000, 10))

    run(body())


def test_fail_open_spend_is_replayed_once_and_not_into_a_counter_seeded_after_it() -> None:
    """heal.lua (tollway_budgets._heal): a replay retried with the same batch marker counts
    once; a counter seeded after the journaled seconds (its seed read the ledger, which holds
    them) takes nothing; a counter Redis lost is left to its seed."""

    async def body() -> None:
        async with store("redis") as s:
            assert s.redis is not None
            kept, reseeded, lost = (
                s.counters({"id": b, "scope": "project", "limit_micro_usd": 10**9})[0]
                for b in ("kept", "reseeded", "lost")
            )
            journal = Journal("node-a")
            at_ms = NOW_MS - 60_000
            for counter in (kept, reseeded, lost):
                journal.add([counter], 700, at_ms=at_ms)
                journal.add([counter], 300, at_ms=at_ms + 5_000)
            await s.redis.seed([kept], [1000], 0, reseed=False, read_at_ms=at_ms - 60_000)
            # Seeded long after those seconds: the ledger it read held them.
            await s.redis.seed([reseeded], [5000], 0, reseed=False, read_at_ms=NOW_MS)
            journal.take()
            (batch,) = journal.batches
            for _ in range(2):  # the retry of a replay that ran but timed out on our side
                added = await s.redis.replay(batch.marker, batch.spend, 1200)
                assert added == (1000 if _ == 0 else 0)
            spent = await s.admit([kept], 0, "probe-kept")
            assert spent.spent == (2000,)
            again = await s.admit([reseeded], 0, "probe-reseeded")
            assert again.spent == (5000,)
            missing = await s.admit([lost], 0, "probe-lost")
            assert missing.status == "seed"

    run(body())
