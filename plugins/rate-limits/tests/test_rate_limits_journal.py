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
