"""Cluster-wide limits: two gateway processes sharing the real Redis, and Redis going away
(a private ``redis-server``, never the shared one)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import redis
from rate_limits_support import (
    HELLO,
    Gateway,
    Key,
    RedisClusterServers,
    RedisServer,
    delete_prefix,
    openai_provider,
    shared_redis,
    start_gateway,
    unique_prefix,
)
from redis.asyncio import RedisCluster

from tollway.redis import RedisOptions, connect
from tollway.testing import Simulator, start_simulator, stop, wait_ready
from tollway_rate_limits._admission import State
from tollway_rate_limits._limits import (
    Limits,
    estimate_tokens,
    key_base,
    provider_base,
    specs_for,
)
from tollway_rate_limits._metrics import REDIS_ERRORS
from tollway_rate_limits._redis import RedisStore
from tollway_rate_limits._settings import RateLimitSettings
from tollway_rate_limits._window import LocalStore, member

DIM = "x-langwatch-ratelimit-dimension"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    client = shared_redis()
    p = unique_prefix()
    yield p
    delete_prefix(client, p)
    client.close()


BURST = Key({"rate_limits": {"rpm": 50}})
SDK = Key({"rate_limits": {"rpm": 2}})
UPSTREAM = Key({"rate_limits": {"rpm": 100}})
CEILING = Key({"rate_limits": {"rpm": 3}})
TPM = Key({"rate_limits": {"tpm": 5000}})


@pytest.fixture(scope="module")
def pair(
    sim: Simulator, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Gateway]]:
    """Gateways A and B on one Redis. B knows CEILING with rpm 5: the key after an update."""
    # Generous Redis timeouts: these tests check exact counting, and a loaded CI machine must
    # not turn a slow round trip into a fail-open admission.
    settings = {
        "key_prefix": prefix,
        "redis_socket_timeout_seconds": 3,
        "redis_connect_timeout_seconds": 3,
    }
    common = {"providers": [openai_provider(sim.url)], "settings": settings}
    a = start_gateway(
        tmp_path_factory.mktemp("a"),
        keys=[BURST, SDK, UPSTREAM, CEILING, TPM],
        redis_url="redis://127.0.0.1:6379/0",
        wait=False,
        **common,  # type: ignore[arg-type]
    )
    b = start_gateway(
        tmp_path_factory.mktemp("b"),
        keys=[BURST, SDK, UPSTREAM, CEILING.with_config({"rate_limits": {"rpm": 5}}), TPM],
        redis_url="redis://127.0.0.1:6379/0",
        wait=False,
        **common,  # type: ignore[arg-type]
    )
    try:
        wait_ready(a)
        wait_ready(b)
        yield a, b
    finally:
        stop(a.proc)
        stop(b.proc)


def test_200_concurrent_requests_across_two_gateways_admit_exactly_the_limit(
    pair: tuple[Gateway, Gateway], prefix: str
) -> None:
    a, b = pair
    with httpx.Client(limits=httpx.Limits(max_connections=64)) as client:

        def send(i: int) -> httpx.Response:
            return (a if i % 2 else b).chat(BURST, client=client)

        with ThreadPoolExecutor(max_workers=48) as pool:
            responses = list(pool.map(send, range(200)))
    statuses = Counter(r.status_code for r in responses)
    print(
        f"\nDRILL rpm_two_replicas_200_concurrent: {statuses[200]} admitted on an rpm=50 key "
        f"(overshoot {statuses[200] - 50})"
    )
    assert statuses == {200: 50, 429: 150}, statuses
    for r in responses:
        if r.status_code == 429:
            assert r.headers[DIM] == "rpm"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert "x-langwatch-provider" not in r.headers
            assert r.json()["error"]["type"] == "rate_limit_exceeded"
        else:
            assert 0 <= int(r.headers["x-ratelimit-remaining-requests"]) < 50
    # Both gateways served some of the 50.
    served_by = {r.url.port for r in responses if r.status_code == 200}
    assert len(served_by) == 2
    # Every key the limiter wrote expires on its own.
    client = shared_redis()
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        assert keys
        assert all(0 < client.pttl(k) <= 60_000 for k in keys)
    finally:
        client.close()


def test_upstream_429_is_distinguishable_from_the_gateways(pair: tuple[Gateway, Gateway]) -> None:
    a, _ = pair
    r = a.chat(UPSTREAM, headers={"x-simulator-fault": "429"})
    assert r.status_code == 429
    assert r.headers["x-langwatch-provider"] == "openai"
    assert DIM not in r.headers


def test_sdk_honours_retry_after_on_a_real_60s_window(
    pair: tuple[Gateway, Gateway], prefix: str
) -> None:
    """Two requests admitted 58.5 s ago (written straight into Redis, on Redis's clock) fill
    rpm = 2; they leave the window within ~1.5 s. A call without retries gets 429 with that
    wait; the SDK with retries sleeps Retry-After and gets through."""
    a, b = pair
    base = key_base(prefix, SDK.org, SDK.id)
    client = shared_redis()
    try:
        seconds, micros = client.time()
        then = seconds * 1000 + micros // 1000 - 58_500
        client.zadd(f"{base}:rpm", {"seed-1|1": then, "seed-2|1": then})
        client.set(f"{base}:rpm:n", 2, px=60_000)
        client.pexpire(f"{base}:rpm", 60_000)
    finally:
        client.close()
    with pytest.raises(openai.RateLimitError) as err:
        a.openai(SDK.secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert int(err.value.response.headers["retry-after"]) in (1, 2)
    assert err.value.response.headers[DIM] == "rpm"
    t0 = time.monotonic()
    reply = b.openai(SDK.secret, max_retries=2).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    assert reply.http_response.status_code == 200
    assert reply.retries_taken >= 1
    assert time.monotonic() - t0 >= 0.5  # it slept for the window to slide


def test_a_ceiling_change_applies_on_the_next_request(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    assert [a.chat(CEILING).status_code for _ in range(4)] == [200, 200, 200, 429]
    # B reads rpm = 5 for the same key: the same counters, a higher ceiling.
    r = b.chat(CEILING)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-requests"] == "5"
    assert r.headers["x-ratelimit-remaining-requests"] == "1"
    assert [b.chat(CEILING).status_code for _ in range(2)] == [200, 429]
    # A still reads rpm = 3, and 5 are in the window.
    assert a.chat(CEILING).status_code == 429


def test_tpm_settles_cluster_wide(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    r = a.chat(TPM, max_tokens=4000)
    assert r.status_code == 200
    assert int(r.headers["x-ratelimit-remaining-tokens"]) < 1000
    # After settlement on A, B sees the actual usage (tens of tokens), not the 4000 estimate.
    deadline = time.monotonic() + 3
    while (r := b.chat(TPM, max_tokens=4000)).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)


def test_redis_readiness_check(pair: tuple[Gateway, Gateway]) -> None:
    a, _ = pair
    r = httpx.get(f"{a.url}/readyz", timeout=5)
    assert r.status_code == 200
    assert r.json()["checks"]["redis"] == "ok"


# --- Redis going away ----------------------------------------------------------------------


def test_redis_down_fails_open_or_closed_without_hanging(sim: Simulator, tmp_path: Path) -> None:
    key = Key({"rate_limits": {"rpm": 100}})
    with RedisServer(tmp_path / "redis") as server:
        common = {"providers": [openai_provider(sim.url)], "keys": [key], "redis_url": server.url}
        open_gw = start_gateway(tmp_path / "open", wait=False, **common)  # type: ignore[arg-type]
        closed_gw = start_gateway(
            tmp_path / "closed",
            wait=False,
            settings={"on_redis_error": "fail_closed", "redis_retry_interval_seconds": 0.2},
            **common,  # type: ignore[arg-type]
        )
        try:
            wait_ready(open_gw)
            wait_ready(closed_gw)
            assert open_gw.chat(key).status_code == 200
            assert closed_gw.chat(key).status_code == 200
            server.kill()
            killed_at = time.monotonic()
            # Fail open: served, without waiting for Redis (every call is bounded by the
            # client timeout; none hangs).
            with httpx.Client(timeout=5) as client:
                for _ in range(5):
                    r = open_gw.chat(key, client=client)
                    assert r.status_code == 200
                    assert "x-ratelimit-limit-requests" not in r.headers
                # Fail closed: 503 naming the limiter.
                for _ in range(3):
                    r = closed_gw.chat(key, client=client)
                    assert r.status_code == 503
                    assert r.json()["error"]["code"] == "rate_limiter_unavailable"
                    assert int(r.headers["retry-after"]) >= 1
                ready_open = client.get(f"{open_gw.url}/readyz")
                ready_closed = client.get(f"{closed_gw.url}/readyz")
            assert ready_open.status_code == 200
            assert ready_open.json()["checks"]["redis"].startswith("degraded")
            assert ready_closed.status_code == 503
            assert ready_closed.json()["checks"]["redis"].startswith("error")
            # At most one warning line per 10 s, not one per request.
            warnings = open_gw.logs().count("rate_limit_redis_unavailable")
            assert 1 <= warnings <= 1 + (time.monotonic() - killed_at) // 10
            # Redis back on the same port: the fail-closed gateway recovers by itself.
            server.start()
            deadline = time.monotonic() + 5
            while (r := closed_gw.chat(key)).status_code != 200:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.1)
            assert "rate_limit_redis_recovered" in closed_gw.logs()
        finally:
            stop(open_gw.proc)
            stop(closed_gw.proc)


def test_redis_failures_are_counted_and_warned_once_per_10s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = State(RateLimitSettings(), LocalStore(), 60_000)
    before = REDIS_ERRORS._value.get()
    with caplog.at_level(logging.WARNING, logger="tollway.rate_limits"):
        for _ in range(3):
            state.policy.failed(redis.ConnectionError("refused"), "admission")
    assert REDIS_ERRORS._value.get() - before == 3
    lines = [r for r in caplog.records if "rate_limit_redis_unavailable" in r.getMessage()]
    assert len(lines) == 1
    assert "policy=fail_open" in lines[0].getMessage()


def test_redis_cluster_one_script_per_slot(tmp_path: Path) -> None:
    """Each scope's keys share a hash tag, so one EVALSHA touches one slot; scopes spread over
    the nodes."""

    async def run(url: str) -> set[int]:
        store = RedisStore(connect(RedisOptions(url, cluster=True)), 2.0)
        nodes = set()
        try:
            for org in ("o1", "o2", "o3", "o4", "o5", "o6"):
                estimate = estimate_tokens({"max_tokens": 10}, 40, 5, embeddings=False)
                specs = specs_for(key_base("t", org, "vk"), Limits(rpm=2, rpd=5, tpm=100), estimate)
                got = [await store.acquire(specs, f"r{i}", 60_000) for i in range(3)]
                assert [d.admitted for d in got] == [True, True, False]
                assert got[1].remaining == (0, 3, 60) and got[2].index == 0
                old, new = member("r0", 20), member("r0", 3)
                assert await store.settle(specs[2].keys, old, new, -17, 60_000)
                client = store.client
                assert isinstance(client, RedisCluster)
                slot = client.keyslot(specs[0].keys[0])
                assert {client.keyslot(k) for s in specs for k in s.keys} == {slot}
                nodes.add(client.nodes_manager.get_node_from_slot(slot).port)
            pspecs = specs_for(provider_base("t", "prov"), Limits(rpm=1), None)
            assert (await store.acquire(pspecs, "r", 60_000)).admitted
        finally:
            await store.client.aclose()
        return nodes

    with RedisClusterServers(tmp_path) as cluster:
        assert len(asyncio.run(run(cluster.url))) > 1
