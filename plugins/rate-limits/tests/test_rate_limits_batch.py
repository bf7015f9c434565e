"""The rate limiter on the request's Redis batch (``tollway.redis_batch``), on real Redis.

In process, the hooks against the shared Redis: ``admit`` sends nothing of its own (the
decision waits for the core's flush, one pipeline with whatever else the request deferred), a
refusal decided in the continuation is raised at the flush, ``account`` queues its settlement,
fail-closed refuses at the flush too, and on a Redis Cluster the same holds. Through a gateway
process: one Redis round trip per request (``gateway_redis_round_trips_total``), admitted or
refused as before, and provider limits skip to the fallback with Redis.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rate_limits_support import (
    SHARED_REDIS,
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

from tollway import (
    Attempt,
    Principal,
    RateLimitExceeded,
    RequestContext,
    ServiceUnavailable,
    Stash,
    Usage,
)
from tollway.redis import RedisFacility, RedisOptions, Script, round_trips
from tollway.redis_batch import flush_request, request_batch, settlements
from tollway.testing import Simulator, free_port, start_simulator, stop
from tollway_rate_limits._admission import State
from tollway_rate_limits._plugin import _STATE, account, admit
from tollway_rate_limits._redis import RedisStore
from tollway_rate_limits._settings import RateLimitSettings

DIM = "x-langwatch-ratelimit-dimension"
WINDOW = 60_000


# --- in process: the hooks against real Redis -------------------------------------------------


def _state(url: str, prefix: str, **settings: Any) -> State:
    facility = RedisFacility(RedisOptions(url, cluster="cluster" in settings))
    settings.pop("cluster", None)
    store = RedisStore(facility.client, 2.0)
    state = State(
        RateLimitSettings(key_prefix=prefix, **settings), store, WINDOW, facility=facility
    )
    state.policy.share(facility)
    return state


def _context(state: State, limits: dict[str, int], org: str = "org") -> RequestContext:
    gateway = SimpleNamespace(stash=Stash())
    gateway.stash[_STATE] = state
    return RequestContext(
        f"req_{uuid.uuid4().hex[:12]}",
        "chat",
        "POST",
        "/v1/chat/completions",
        b"",
        {},
        "t",
        "s",
        gateway=gateway,
        principal=Principal(
            f"vk_{org}", "lw_vk_test", organization_id=org, config={"rate_limits": limits}
        ),
        body={"max_tokens": 100},
        raw_body=b"x" * 40,  # ~10 input tokens: the tpm reservation is 110
    )


@pytest.fixture
def prefix() -> Iterator[str]:
    client = shared_redis()
    p = unique_prefix()
    yield p
    delete_prefix(client, p)
    client.close()


def test_admission_waits_for_the_flush_and_shares_its_round_trip(prefix: str) -> None:
    async def run() -> None:
        state = _state(SHARED_REDIS, prefix)
        assert state.facility is not None
        other = Script(state.facility.client, "return 'other plugin'")
        limits = {"rpm": 2, "tpm": 1000}
        try:
            # Warm: a pooled connection open (its handshake is round trips too), scripts known.
            assert isinstance(state.store, RedisStore)
            for script in (state.store.acquire_script, state.store.heal_script, other):
                await script.load()  # another test may have flushed Redis' script cache
            for n in (1, 2):
                ctx = _context(state, limits)
                before = round_trips()
                await admit(ctx)
                assert round_trips() == before  # deferred: nothing sent yet
                assert request_batch(ctx, state.facility).pending
                assert "langwatch.rate_limit.decision" not in ctx.span_attributes
                # Another plugin's call joins the same pipeline.
                replies: list[Any] = []
                request_batch(ctx, state.facility).defer(other, then=replies.append)
                await flush_request(ctx)
                assert round_trips() - before == 1
                assert replies == [b"other plugin"]
                assert ctx.span_attributes["langwatch.rate_limit.decision"] == "allow"
                assert ctx.response_headers["x-ratelimit-remaining-requests"] == str(2 - n)
                assert ctx.response_headers["x-ratelimit-remaining-tokens"] == str(1000 - 110 * n)
            # The third is refused: decided in the continuation, raised at the flush.
            ctx = _context(state, limits)
            before = round_trips()
            await admit(ctx)
            assert round_trips() == before
            with pytest.raises(RateLimitExceeded) as refused:
                await flush_request(ctx)
            assert round_trips() - before == 1
            exc = refused.value
            assert exc.status == 429 and exc.code == "rate_limit_exceeded"
            assert 0 < exc.retry_after <= 60  # type: ignore[operator]
            headers = exc.headers()
            assert headers["X-LangWatch-RateLimit-Dimension"] == "rpm"
            assert 1 <= int(headers["Retry-After"]) <= 60
            assert 0 < int(headers["retry-after-ms"]) <= WINDOW
            assert "2 requests per minute (rpm)" in exc.message
            assert ctx.span_attributes["langwatch.rate_limit.decision"] == "block"
            assert "x-ratelimit-remaining-requests" not in ctx.response_headers
        finally:
            await state.facility.release("test")

    asyncio.run(run())


def test_put_back_rides_in_the_pipeline_when_due(prefix: str) -> None:
    """A scope new to this replica, or idle for most of a window: its (empty) put-back goes
    ahead of the decision in the same pipeline. Redis losing the scope unannounced: the
    continuation puts the journal back and asks again (the rare path's own round trips), and
    the window holds what this replica admitted."""

    async def run() -> None:
        state = _state(SHARED_REDIS, prefix)
        assert state.facility is not None and isinstance(state.store, RedisStore)
        client = state.facility.client
        for script in (state.store.acquire_script, state.store.heal_script):
            await script.load()
        limits = {"rpm": 3}
        epoch = f"{prefix}:{{org:org}}:vk:vk_org:e"
        try:

            async def one() -> tuple[int, RequestContext]:
                ctx = _context(state, limits)
                before = round_trips()
                await admit(ctx)
                try:
                    await flush_request(ctx)
                except RateLimitExceeded:
                    pass
                return round_trips() - before, ctx

            trips, ctx = await one()  # new to this replica
            assert trips == 1 and ctx.span_attributes["langwatch.rate_limit.decision"] == "allow"
            assert await client.hexists(epoch, state.journal.node_id)
            state.journal.marked[epoch] -= WINDOW  # idle for a window
            trips, ctx = await one()
            assert trips == 1 and ctx.span_attributes["langwatch.rate_limit.decision"] == "allow"
            await client.delete(*await client.keys(f"{prefix}:*"))  # Redis lost the scope
            trips, ctx = await one()
            assert trips == 3  # the decision, the put-back, the decision again
            assert ctx.span_attributes["langwatch.rate_limit.decision"] == "allow"
            assert state.journal.restored == 2
            trips, ctx = await one()  # 2 put back + 1 + this one > 3
            assert trips == 1 and ctx.span_attributes["langwatch.rate_limit.decision"] == "block"
        finally:
            await state.facility.release("test")

    asyncio.run(run())


def test_a_burst_on_an_idle_scope_puts_back_once_and_only_what_redis_lacks(
    tmp_path: Path,
) -> None:
    """A scope idle for most of a window, then a burst of concurrent requests: one put-back
    rides ahead of their decisions, and it re-adds nothing Redis still has (before: each
    decision of the burst sent the whole journal, tens of thousands of ZADDs after a busy
    minute). Redis losing the scope before the next burst: the journal is put back once."""

    async def run(url: str) -> None:
        state = _state(url, "rl-burst")
        assert state.facility is not None and isinstance(state.store, RedisStore)
        client = state.facility.client
        limits = {"rpm": 1000}
        epoch = "rl-burst:{org:org}:vk:vk_org:e"

        async def burst(n: int) -> None:
            contexts = [_context(state, limits) for _ in range(n)]
            for ctx in contexts:
                await admit(ctx)
            await asyncio.gather(*(flush_request(ctx) for ctx in contexts))
            for ctx in contexts:
                assert ctx.span_attributes["langwatch.rate_limit.decision"] == "allow"

        async def zadds() -> int:
            return int((await client.info("commandstats"))["cmdstat_zadd"]["calls"])

        try:
            await burst(40)  # new to this replica: a journal of 40 entries
            state.journal.marked[epoch] -= int(WINDOW * 0.95)  # idle for most of a window
            before = await zadds()
            await burst(20)
            assert await zadds() - before == 20  # one per decision, none for the put-back
            assert int(await client.zcard("rl-burst:{org:org}:vk:vk_org:rpm")) == 60
            await client.delete(*await client.keys("rl-burst:*"))  # Redis lost the scope
            state.journal.marked[epoch] -= int(WINDOW * 0.95)
            await burst(20)
            assert int(await client.zcard("rl-burst:{org:org}:vk:vk_org:rpm")) == 80
            assert state.journal.restored == 60
        finally:
            await state.facility.release("test")

    with RedisServer(tmp_path / "redis") as server:
        asyncio.run(run(server.url))


def test_settlement_goes_through_the_queue(prefix: str) -> None:
    async def run() -> None:
        state = _state(SHARED_REDIS, prefix)
        assert state.facility is not None
        client = state.facility.client
        try:
            ctx = _context(state, {"tpm": 1000})
            await admit(ctx)
            await flush_request(ctx)
            total = f"{prefix}:{{org:org}}:vk:vk_org:tpm:n"
            assert int(await client.get(total)) == 110
            ctx.usage = Usage(input_tokens=5, output_tokens=7)
            ctx.attempts.append(Attempt("sim", "openai", "m", "ok", 200, "", 0.1))
            queue = settlements(state.facility)
            before = round_trips()
            await account(ctx)
            assert round_trips() == before and len(queue) == 1  # queued, not sent
            await queue.drain()
            assert int(await client.get(total)) == 12
            # Released when no provider answered.
            ctx = _context(state, {"tpm": 1000})
            await admit(ctx)
            await flush_request(ctx)
            assert int(await client.get(total)) == 122
            await account(ctx)
            await queue.drain()
            assert int(await client.get(total)) == 12
        finally:
            await state.facility.release("test")

    asyncio.run(run())


def test_fail_closed_refuses_at_the_flush_then_at_once() -> None:
    """A Redis that refuses connections: the first request's deferred call fails at the flush
    (503 there); the next ones, while the limiter backs off, are refused in ``admit``."""

    async def run() -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
        state = _state(url, unique_prefix(), on_redis_error="fail_closed")
        assert state.facility is not None
        try:
            ctx = _context(state, {"rpm": 5})
            await admit(ctx)
            with pytest.raises(ServiceUnavailable) as first:
                await flush_request(ctx)
            assert first.value.code == "rate_limiter_unavailable"
            assert first.value.headers()["Retry-After"] == "1"
            ctx = _context(state, {"rpm": 5})
            with pytest.raises(ServiceUnavailable) as second:
                await admit(ctx)
            assert second.value.code == "rate_limiter_unavailable"
            assert not request_batch(ctx, state.facility).pending
        finally:
            await state.facility.release("test")

    asyncio.run(run())


def test_redis_cluster_batch_and_settlement_queue(tmp_path: Path) -> None:
    """On a Redis Cluster the request's pipeline and the settlement queue split by node: the
    key's admission and another plugin's call on another slot in one flush, each as alone."""

    async def run(url: str) -> None:
        state = _state(url, "t", cluster=True)
        assert state.facility is not None
        client = state.facility.client
        other = Script(client, "return redis.call('INCR', KEYS[1])")
        orgs = [f"o{i}" for i in range(6)]
        try:
            for n in range(3):
                for org in orgs:
                    ctx = _context(state, {"rpm": 2, "tpm": 1000}, org)
                    await admit(ctx)
                    replies: list[Any] = []
                    batch = request_batch(ctx, state.facility)
                    batch.defer(other, [f"t:{{elsewhere:{org}}}:n"], then=replies.append)
                    if n < 2:
                        await flush_request(ctx)
                        assert ctx.span_attributes["langwatch.rate_limit.decision"] == "allow"
                    else:
                        with pytest.raises(RateLimitExceeded):
                            await flush_request(ctx)
                    assert replies == [n + 1]
                    if n == 0:
                        ctx.usage = Usage(input_tokens=1, output_tokens=2)
                        ctx.attempts.append(Attempt("sim", "openai", "m", "ok", 200, "", 0.1))
                        await account(ctx)
                await settlements(state.facility).drain()
            slots = set()
            for org in orgs:
                total = f"t:{{org:{org}}}:vk:vk_{org}:tpm:n"
                assert int(await client.get(total)) == 3 + 110  # the first settled, not the 2nd
                slots.add(client.keyslot(total))
            assert len(slots) > 1
        finally:
            await client.delete(*[f"t:{{elsewhere:{org}}}:n" for org in orgs])
            await state.facility.release("test")

    with RedisClusterServers(tmp_path) as cluster:
        asyncio.run(run(cluster.url))


# --- through a gateway process --------------------------------------------------------------


def _round_trips(gw: Gateway) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_redis_round_trips_total":
                return sample.value
    return 0.0


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


WARM = Key({"rate_limits": {"rpm": 100}})
#: Keys this gateway has never decided on: before the batch, each one's first decision was
#: three round trips (the script asked for the put-back first, then the decision again).
FRESH = [Key({"rate_limits": {"rpm": 1, "rpd": 100}}) for _ in range(5)]
FALLBACK = Key({})
#: The core's routing stats are shared through Redis in the background: at most two round
#: trips (publish + read, and dropping stale peers) per second (``tollway._routing_share``).
BACKGROUND_PER_SECOND = 2


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    client = shared_redis()
    p = unique_prefix()
    g = start_gateway(
        tmp_path_factory.mktemp("gw"),
        providers=[
            openai_provider(sim.url),
            openai_provider(
                sim.url, "primary", api_key="sk-primary", priority=0, rpm=1, models=["fb-model"]
            ),
            openai_provider(
                sim.url, "secondary", api_key="sk-secondary", priority=1, rpm=1, models=["fb-model"]
            ),
        ],
        keys=[WARM, *FRESH, FALLBACK],
        redis_url=SHARED_REDIS,
        settings={
            "key_prefix": p,
            "redis_socket_timeout_seconds": 3,
            "redis_connect_timeout_seconds": 3,
        },
    )
    try:
        yield g
    finally:
        stop(g.proc)
        delete_prefix(client, p)
        client.close()


def test_one_round_trip_per_request_admitted_or_refused(gw: Gateway) -> None:
    with httpx.Client(timeout=20) as client:
        assert gw.chat(WARM, client=client).status_code == 200  # scripts loaded, pool warm
        before = _round_trips(gw)
        started = time.monotonic()
        admitted = [gw.chat(key, client=client) for key in FRESH]
        refused = [gw.chat(key, client=client) for key in FRESH]
        elapsed = time.monotonic() - started
        after = _round_trips(gw)
    requests = len(admitted) + len(refused)
    background = BACKGROUND_PER_SECOND * (1 + math.ceil(elapsed))
    assert requests <= after - before <= requests + background, (after - before, elapsed)
    for r in admitted:
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "1"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    for r in refused:
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["type"] == "rate_limit_exceeded" and error["code"] == "rate_limit_exceeded"
        assert "1 requests per minute (rpm)" in error["message"]
        assert r.headers[DIM] == "rpm"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert 0 < int(r.headers["retry-after-ms"]) <= WINDOW
        assert "x-langwatch-provider" not in r.headers


def test_provider_limits_skip_then_refuse_with_redis(gw: Gateway, sim: Simulator) -> None:
    """``before_attempt`` defers too (the core flushes right after it): a provider at its
    limit is skipped, and when every one is, the client gets the 429."""
    seen = []
    with httpx.Client(timeout=20) as client:
        for _ in range(2):
            sim.clear()
            r = gw.chat(FALLBACK, client=client, model="fb-model")
            assert r.status_code == 200, r.text
            assert r.headers["x-langwatch-fallback-count"] == "0"
            (req,) = sim.requests()
            seen.append(dict(req["headers"])["authorization"])
        sim.clear()
        refused = gw.chat(FALLBACK, client=client, model="fb-model")
    assert seen == ["Bearer sk-primary", "Bearer sk-secondary"]
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "provider_rate_limited"
    assert "every provider" in error["message"] and "'secondary'" in error["message"]
    assert refused.headers[DIM] == "rpm"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert sim.requests() == []
