"""The Redis store: two gateway processes sharing the real Redis (a unique key prefix per run,
deleted afterwards), and a private ``redis-server`` that goes away."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from response_cache_support import (
    HEADER,
    SHARED_REDIS,
    Gateway,
    RedisServer,
    Simulator,
    delete_prefix,
    shared_redis,
    start_gateway,
    start_simulator,
    unique_prefix,
)

from tollway.redis import RedisOptions, connect
from tollway.testing import StaticKey, stop
from tollway_response_cache import Entry, cache_digest
from tollway_response_cache._store import ALONE, HIT, LEAD, WAIT, RedisStore, now_ms

CACHED = StaticKey({"response_cache": {"ttl_s": 300}}, project_id="proj_r1")
SAME_PROJECT = StaticKey({"response_cache": {"ttl_s": 300}}, project_id="proj_r1")
OTHER_PROJECT = StaticKey({"response_cache": {"ttl_s": 300}}, project_id="proj_r2")
SHORT_TTL = StaticKey({"response_cache": {"ttl_s": 0.5}}, project_id="proj_r3")
LIMITED = StaticKey(
    {"response_cache": {"ttl_s": 300}, "rate_limits": {"rpm": 2}}, project_id="proj_r4"
)
KEYS = [CACHED, SAME_PROJECT, OTHER_PROJECT, SHORT_TTL, LIMITED]

_n = iter(range(1_000_000))


def chat(**extra: Any) -> dict[str, Any]:
    content = f"redis cache #{next(_n)} {time.monotonic_ns()}"
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    p = unique_prefix()
    client = shared_redis()
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {SHARED_REDIS}")
    yield p
    delete_prefix(client, p)
    client.close()


@pytest.fixture(scope="module")
def gws(
    sim: Simulator, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Gateway]]:
    started = []
    try:
        for i in range(2):
            started.append(
                start_gateway(
                    tmp_path_factory.mktemp(f"rc-redis{i}"),
                    sim.url,
                    KEYS,
                    settings={"key_prefix": prefix},
                    redis_url=SHARED_REDIS,
                )
            )
        yield started[0], started[1]
    finally:
        for gw in started:
            stop(gw.proc)


def test_an_answer_stored_by_one_replica_is_a_hit_on_the_other(
    gws: tuple[Gateway, Gateway], sim: Simulator
) -> None:
    a, b = gws
    sim.clear()
    body = chat()
    first = a.post(CACHED, "/v1/chat/completions", body)
    second = b.post(CACHED, "/v1/chat/completions", body)
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    assert first.content == second.content
    assert b.post(SAME_PROJECT, "/v1/chat/completions", body).headers[HEADER] == "hit"
    assert b.post(OTHER_PROJECT, "/v1/chat/completions", body).headers[HEADER] == "miss"
    assert sim.count() == 2


def test_streams_replay_across_replicas(gws: tuple[Gateway, Gateway], sim: Simulator) -> None:
    a, b = gws
    sim.clear()
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": f"stream #{next(_n)} {time.monotonic_ns()}"}],
    }
    out = []
    for gw in (a, b):
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/messages",
            json=body,
            headers={"x-api-key": CACHED.secret, "anthropic-version": "2023-06-01"},
            timeout=20,
        ) as r:
            out.append((r.headers[HEADER], r.read()))
    assert [o[0] for o in out] == ["miss", "hit"]
    assert out[0][1] == out[1][1] and b"message_stop" in out[0][1]
    assert sim.count() == 1


def test_entries_carry_the_ttl_in_redis(
    gws: tuple[Gateway, Gateway], sim: Simulator, prefix: str
) -> None:
    a, b = gws
    client = shared_redis()
    try:
        before = set(client.scan_iter(match=f"{prefix}:e:*"))
        a.post(CACHED, "/v1/chat/completions", chat())
        time.sleep(0.1)  # the entry is written after the response (in `account`)
        new = set(client.scan_iter(match=f"{prefix}:e:*")) - before
        assert len(new) == 1
        ttl_ms = client.pttl(new.pop())
        assert 290_000 < ttl_ms <= 300_000
        body = chat()
        assert a.post(SHORT_TTL, "/v1/chat/completions", body).headers[HEADER] == "miss"
        assert b.post(SHORT_TTL, "/v1/chat/completions", body).headers[HEADER] == "hit"
        time.sleep(0.6)
        assert b.post(SHORT_TTL, "/v1/chat/completions", body).headers[HEADER] == "miss"
    finally:
        client.close()


def test_errors_leave_no_entry(gws: tuple[Gateway, Gateway], sim: Simulator, prefix: str) -> None:
    a, b = gws
    client = shared_redis()
    # This key's project only: another test's answer may still be on its way to Redis (stores
    # are settlements, sent after the response), and it is not this request's entry.
    entries = f"{prefix}:e:{{default/{CACHED.project_id}:*"
    try:
        time.sleep(0.2)  # earlier tests' stores (same project) have landed
        before = set(client.scan_iter(match=entries))
        body = chat()
        r = a.post(CACHED, "/v1/chat/completions", body, {"x-simulator-fault": "503"})
        assert r.status_code == 503
        time.sleep(0.1)
        assert set(client.scan_iter(match=entries)) == before
        assert b.post(CACHED, "/v1/chat/completions", body).headers[HEADER] == "miss"
    finally:
        client.close()


def test_concurrent_identical_misses_on_two_replicas_make_one_upstream_call(
    gws: tuple[Gateway, Gateway], sim: Simulator
) -> None:
    a, b = gws
    sim.clear()
    body = chat()
    headers = {"Authorization": f"Bearer {CACHED.secret}", "x-simulator-latency-ms": "400"}

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            f"{(a, b)[i % 2].url}/v1/chat/completions", json=body, headers=headers
                        )
                        for i in range(50)
                    )
                )
            )

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert Counter(r.headers[HEADER] for r in responses) == {"miss": 1, "hit": 49}
    assert len({r.content for r in responses}) == 1
    assert sim.count() == 1


def test_a_rate_limited_request_is_refused_as_before_and_leaves_no_lock(
    gws: tuple[Gateway, Gateway], sim: Simulator, prefix: str
) -> None:
    """The rate limit's refusal (decided at admission, possibly in the same Redis round trip
    as the cache lookup) reaches the client unchanged, and no fill lock outlives it."""
    a, b = gws
    client = shared_redis()
    try:
        sim.clear()
        body, refused_body = chat(), chat()
        answered = [a.post(LIMITED, "/v1/chat/completions", body) for _ in range(2)]
        assert [r.headers[HEADER] for r in answered] == ["miss", "hit"]
        r = b.post(LIMITED, "/v1/chat/completions", refused_body)
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_exceeded"
        assert int(r.headers["retry-after"]) >= 1
        assert HEADER not in r.headers  # refused before the cache answered anything
        assert sim.count() == 1
        time.sleep(0.2)  # settlements go at most 50 ms after the response
        headers = {"anthropic-version": "2023-06-01"}
        digests = [
            cache_digest("chat", "gpt-4o-mini", False, b_, headers) for b_ in (body, refused_body)
        ]
        assert list(client.scan_iter(match=f"{prefix}:e:*{digests[0]}*"))  # the digest is right
        assert not list(client.scan_iter(match=f"{prefix}:*{digests[1]}*"))  # no lock, no entry
    finally:
        client.close()


def test_redis_going_away_fails_open(sim: Simulator, tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        gw = start_gateway(
            tmp_path / "gw", sim.url, [CACHED], settings={"key_prefix": "t"}, redis_url=server.url
        )
        try:
            body = chat()
            assert gw.post(CACHED, "/v1/chat/completions", body).headers[HEADER] == "miss"
            time.sleep(0.1)
            assert gw.post(CACHED, "/v1/chat/completions", body).headers[HEADER] == "hit"
            server.kill()
            for _ in range(2):
                r = gw.post(CACHED, "/v1/chat/completions", body)
                assert r.status_code == 200 and r.headers[HEADER] == "miss"
            ready = httpx.get(f"{gw.url}/readyz", timeout=5)
            assert ready.status_code == 200
            assert ready.json()["checks"]["response_cache"].startswith("degraded")
            assert "response_cache_redis_unavailable" in gw.logs()
            assert "Traceback" not in gw.logs()
        finally:
            stop(gw.proc)


def test_no_tracebacks(gws: tuple[Gateway, Gateway]) -> None:
    for gw in gws:
        assert "Traceback" not in gw.logs()


def test_redis_store_protocol(prefix: str) -> None:
    """The one-round-trip lookup: hit, lead (lock taken), wait (lock held), alone (the leader
    failed), and entries judged by the reader's max age."""

    async def run() -> None:
        store = RedisStore(
            connect(RedisOptions(SHARED_REDIS, socket_timeout=1, connect_timeout=1)), prefix, 2
        )
        try:
            key = f"scope/p:{time.monotonic_ns()}"
            assert await store.lookup(key, 60_000, "t1", 5_000) == (LEAD, None)
            assert await store.lookup(key, 60_000, "t2", 5_000) == (WAIT, None)
            await store.release(key, "t1")  # the leader failed
            assert await store.lookup(key, 60_000, "t3", 5_000) == (ALONE, None)
            entry = Entry(200, b'{"ok":true}', None, now_ms() - 2_000)
            await store.put(key, entry, 60_000, "")
            assert await store.lookup(key, 60_000, "t4", 5_000) == (HIT, entry)
            assert (await store.lookup(key, 1_000, "", 5_000)) == (ALONE, None)  # too old
            # A corrupt value is a miss (refilled), never an error.
            raw = store.client
            await raw.set(f"{prefix}:e:{{{key}}}", b"garbage")
            assert await store.lookup(key, 60_000, "", 5_000) == (ALONE, None)
        finally:
            await store.close()
            await store.client.aclose()

    asyncio.run(run())
