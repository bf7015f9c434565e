"""Putting a window back after Redis lost its data (heal.lua + the replicas' journals), on the
shared Redis under a prefix of its own: whatever the replicas admitted and in whatever order
they put their journals back, the window holds exactly what was admitted once all have — and
never less than a replica last saw, from the first put-back on. Putting back twice changes
nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rate_limits_support import delete_prefix, shared_redis
from redis.asyncio import Redis

from tollway_rate_limits._journal import Journal, epoch_key
from tollway_rate_limits._limits import Limits, key_base, specs_for
from tollway_rate_limits._redis import HealFirst, RedisStore

WINDOW = 60_000
LIMIT = 1000


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    client = shared_redis()
    p = f"tollway-test:rl-journal:{uuid.uuid4().hex[:10]}"
    yield p
    delete_prefix(client, p)
    client.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    admissions=st.lists(st.integers(0, 2), min_size=1, max_size=40),  # which replica admits
    order=st.permutations([0, 1, 2]),
    twice=st.booleans(),
)
def test_all_replicas_put_back_exactly_the_window(
    prefix: str, admissions: list[int], order: list[int], twice: bool
) -> None:
    asyncio.run(_scenario(f"{prefix}:{uuid.uuid4().hex[:8]}", admissions, order, twice))


async def _scenario(prefix: str, admissions: list[int], order: list[int], twice: bool) -> None:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    store = RedisStore(client, 2.0)
    journals = [Journal(f"node{i}", WINDOW) for i in range(3)]
    specs = specs_for(key_base(prefix, "org", "vk"), Limits(LIMIT, None, None), None)
    epoch = epoch_key(specs)
    total_key = specs[0].keys[1]
    try:

        async def decide(replica: int, member_id: str) -> None:
            journal = journals[replica]
            node = journal.node_id
            try:
                d = await store.acquire(specs, member_id, WINDOW, node_id=node, epoch=epoch)
            except HealFirst:
                await store.heal(epoch, node, journal.entries(epoch), WINDOW, lost=True)
                d = await store.acquire(specs, member_id, WINDOW, node_id=node, epoch=epoch)
            assert d.admitted
            journal.record(specs, member_id, d.now_ms, fail_open=False, remaining=d.remaining)

        for i, replica in enumerate(admissions):
            await decide(replica, f"r{i}")
        await client.delete(*specs[0].keys, epoch, f"{specs[0].keys[0]}:h")  # the data is lost
        seen_max = 0
        for replica in order:
            journal = journals[replica]
            seen = journal.seen.get((specs[0].keys[0], specs[0].keys[1]))
            seen_max = max(seen_max, seen[1] if seen else 0)
            for _ in range(2 if twice else 1):
                await store.heal(epoch, journal.node_id, journal.entries(epoch), WINDOW, lost=True)
            assert int(await client.get(total_key) or 0) >= seen_max
        assert int(await client.get(total_key) or 0) == len(admissions)
    finally:
        await client.aclose()


# --- the day counters (rpd) ---------------------------------------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # (which replica admits, through Redis or fail-open)
    admissions=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=40),
    lose=st.booleans(),
    order=st.permutations([0, 1, 2]),
    twice=st.booleans(),
)
def test_the_day_counter_holds_every_admission_once_all_replicas_put_back(
    prefix: str, admissions: list[tuple[int, bool]], lose: bool, order: list[int], twice: bool
) -> None:
    """rpd: whatever the replicas admitted, through Redis or fail-open, and whether Redis then
    lost its data or not, the day counter holds each admission once after every replica put
    back its journal (in any order, any number of times), and never less than a replica last
    saw from its put-back on."""
    asyncio.run(_day_scenario(f"{prefix}:{uuid.uuid4().hex[:8]}", admissions, lose, order, twice))


async def _day_scenario(
    prefix: str, admissions: list[tuple[int, bool]], lose: bool, order: list[int], twice: bool
) -> None:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    store = RedisStore(client, 2.0)
    journals = [Journal(f"node{i}", WINDOW) for i in range(3)]
    specs = specs_for(key_base(prefix, "org", "vk"), Limits(None, LIMIT, None), None)
    (day,) = specs
    epoch = epoch_key(specs)

    async def total() -> int:
        return int(await client.hget(day.keys[0], "n") or 0)

    try:
        for i, (replica, fail_open) in enumerate(admissions):
            journal = journals[replica]
            if fail_open:  # Redis unreachable for this one: admitted without it
                journal.record(specs, f"r{i}", None, fail_open=True)
                continue
            node = journal.node_id
            try:
                d = await store.acquire(specs, f"r{i}", WINDOW, node_id=node, epoch=epoch)
            except HealFirst:
                await store.heal(epoch, node, {}, WINDOW, lost=True, days=journal.day_counts(epoch))
                d = await store.acquire(specs, f"r{i}", WINDOW, node_id=node, epoch=epoch)
            assert d.admitted
            journal.record(specs, f"r{i}", d.now_ms, fail_open=False, remaining=d.remaining)
        if lose:
            await client.delete(day.keys[0], epoch)
        seen_max = 0
        for replica in order:
            journal = journals[replica]
            count = journal.day_counts(epoch).get(day.keys[0])
            seen_max = max(seen_max, count.seen if count else 0)
            for _ in range(2 if twice else 1):
                await store.heal(
                    epoch, journal.node_id, {}, WINDOW, lost=lose, days=journal.day_counts(epoch)
                )
            assert await total() >= seen_max
        assert await total() == len(admissions)
        # The fields agree with the total: each replica's own count, no placeholder left.
        fields = {k.decode(): int(v) for k, v in (await client.hgetall(day.keys[0])).items()}
        owns = {k: v for k, v in fields.items() if k.startswith("r:")}
        assert sum(owns.values()) == len(admissions)
        assert not [k for k in fields if k.startswith("~")]
    finally:
        await client.delete(day.keys[0], epoch)
        await client.aclose()
