"""The decision logic: properties of the in-process counter (hypothesis), and the Lua script on
real Redis agreeing with it decision for decision."""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rate_limits_support import delete_prefix, shared_redis
from redis.asyncio import Redis

from tollway.redis import RedisFacility, RedisOptions, round_trips
from tollway.redis_batch import settlements
from tollway_rate_limits._limits import (
    InvalidLimits,
    Limits,
    estimate_tokens,
    go_duration,
    human_wait,
    key_base,
    parse_limits,
    specs_for,
    success_headers,
)
from tollway_rate_limits._redis import RedisStore
from tollway_rate_limits._window import DAY_MS, NEVER, LocalStore, Spec, member

W = 60_000
T0 = 1_750_000_000_000  # some UTC ms; the tests add offsets to it


def log_spec(limit: int, cost: int, name: str = "k", dimension: str = "rpm") -> Spec:
    return Spec(dimension, "log", (f"{name}:z", f"{name}:n"), limit, cost)


def day_spec(limit: int, name: str = "k") -> Spec:
    return Spec("rpd", "day", (f"{name}:d",), limit, 1)


# --- properties of the sliding-window log ------------------------------------------------------

ops = st.lists(
    st.tuples(st.integers(0, 20_000), st.integers(1, 6)),  # (ms since the previous op, cost)
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(limit=st.integers(0, 12), steps=ops)
def test_never_more_than_the_limit_in_any_window(limit: int, steps: list[tuple[int, int]]) -> None:
    store = LocalStore()
    now = T0
    admitted: list[tuple[int, int]] = []
    for i, (dt, cost) in enumerate(steps):
        now += dt
        d = store.acquire([log_spec(limit, cost)], f"r{i}", W, now)
        if d.admitted:
            admitted.append((now, cost))
            assert d.remaining == (limit - sum(c for t, c in admitted if t > now - W),)
        elif cost > limit:
            assert d.retry_ms == NEVER
    # The weight in a window only grows at admissions, so checking windows ending there
    # checks every window.
    for end, _ in admitted:
        assert sum(c for t, c in admitted if end - W < t <= end) <= limit


@settings(max_examples=150, deadline=None)
@given(limit=st.integers(1, 12), steps=ops)
def test_retry_after_is_exact(limit: int, steps: list[tuple[int, int]]) -> None:
    """After a refusal with wait r, the same request is still refused at r - 1 ms and admitted
    at r (when nothing else happens meanwhile)."""
    store = LocalStore()
    now = T0
    for i, (dt, cost) in enumerate(steps):
        now += dt
        spec = log_spec(limit, cost)
        d = store.acquire([spec], f"r{i}", W, now)
        if d.admitted or d.retry_ms == NEVER:
            continue
        assert 1 <= d.retry_ms <= W
        before = copy.deepcopy(store).acquire([spec], "probe", W, now + d.retry_ms - 1)
        assert not before.admitted
        at = copy.deepcopy(store).acquire([spec], "probe", W, now + d.retry_ms)
        assert at.admitted


@settings(max_examples=120, deadline=None)
@given(
    rpm=st.integers(1, 5),
    tpm=st.integers(1, 40),
    steps=st.lists(st.tuples(st.integers(0, 15_000), st.integers(1, 15)), max_size=40),
)
def test_all_or_nothing_and_longest_wait(rpm: int, tpm: int, steps: list[tuple[int, int]]) -> None:
    store = LocalStore()
    now = T0
    for i, (dt, tokens) in enumerate(steps):
        now += dt
        specs = [log_spec(rpm, 1, "a"), log_spec(tpm, tokens, "b", "tpm")]
        before = [store.used(s.keys, "log", W, now) for s in specs]
        d = store.acquire(specs, f"r{i}", W, now)
        after = [store.used(s.keys, "log", W, now) for s in specs]
        if d.admitted:
            assert after == [before[0] + 1, before[1] + tokens]
            continue
        assert after == before  # a refusal takes nothing
        # The reported dimension is the one with the longest wait (never beats any wait).
        waits = []
        for s in specs:
            alone = copy.deepcopy(store).acquire([s], "probe", W, now)
            waits.append(None if alone.admitted else alone.retry_ms)
        assert waits[d.index] == d.retry_ms
        for w in waits:
            if w is not None and d.retry_ms != NEVER:
                assert w != NEVER and w <= d.retry_ms


def test_settle_replaces_the_estimate_and_release_frees_it() -> None:
    store = LocalStore()
    spec = log_spec(100, 80, dimension="tpm")
    assert store.acquire([spec], "a", W, T0).admitted
    assert not store.acquire([log_spec(100, 30, dimension="tpm")], "b", W, T0 + 1).admitted
    assert store.settle(spec.keys, member("a", 80), member("a", 12), 12 - 80)
    assert store.used(spec.keys, "log", W, T0 + 2) == 12
    assert store.acquire([log_spec(100, 30, dimension="tpm")], "b", W, T0 + 2).admitted
    assert store.settle(spec.keys, member("b", 30), "", -30)
    assert store.used(spec.keys, "log", W, T0 + 3) == 12
    # The settled entry keeps its admission time: it leaves the window W after T0.
    assert store.used(spec.keys, "log", W, T0 + W) == 0
    assert not store.settle(spec.keys, member("a", 12), "", -12)  # already gone


def test_day_counter_resets_at_utc_midnight() -> None:
    store = LocalStore()
    midnight = (T0 // DAY_MS + 1) * DAY_MS
    now = midnight - 5_000
    assert store.acquire([day_spec(2)], "a", W, now).admitted
    assert store.acquire([day_spec(2)], "b", W, now).admitted
    d = store.acquire([day_spec(2)], "c", W, now + 1)
    assert not d.admitted and d.retry_ms == 4_999
    assert not store.acquire([day_spec(2)], "c", W, midnight - 1).admitted
    assert store.acquire([day_spec(2)], "c", W, midnight).admitted


def test_idle_keys_are_swept() -> None:
    store = LocalStore()
    for i in range(50):
        store.acquire([log_spec(5, 1, f"k{i}"), day_spec(5, f"k{i}")], "r", W, T0)
    assert len(store) == 100
    store.acquire([log_spec(5, 1, "fresh")], "r", W, T0 + DAY_MS)
    assert len(store) == 1


# --- pure helpers -------------------------------------------------------------------------------


def test_parse_limits() -> None:
    assert not parse_limits(None)
    assert not parse_limits({"rpm": None})
    assert parse_limits({"rpm": 5, "tpm": 0, "other": "x"}) == Limits(rpm=5, tpm=0)
    for bad in ({"rpm": -1}, {"rpd": "5"}, {"tpm": 1.5}, {"rpm": True}, [1]):
        with pytest.raises(InvalidLimits):
            parse_limits(bad)


def test_token_estimate() -> None:
    body: dict[str, Any] = {"max_completion_tokens": 50}
    e = estimate_tokens(body, 400, 1024, embeddings=False)
    assert (e.input_tokens, e.output_tokens, e.explicit) == (100, 50, True)
    assert e.cost(10) == 150  # an explicit cap is never trimmed: it will be refused
    e = estimate_tokens({}, 400, 1024, embeddings=False)
    assert e.cost(10_000) == 1124 and e.cost(500) == 500  # a guess is capped at the limit
    assert estimate_tokens({"max_tokens": 9}, 40, 1024, embeddings=True).total == 10
    assert estimate_tokens({"max_output_tokens": 7}, 0, 1, embeddings=False).output_tokens == 7


def test_formatting() -> None:
    assert [go_duration(ms) for ms in (20, 1000, 1001, 60_000, 3_723_000)] == [
        "20ms",
        "1s",
        "2s",
        "1m0s",
        "1h2m3s",
    ]
    assert [human_wait(ms) for ms in (1, 12_000, 185_000, 18_200_000)] == [
        "1 s",
        "12 s",
        "3 min 5 s",
        "5 h 3 min",
    ]
    assert key_base("p", "o{1}", "vk") == "p:{org:o(1)}:vk:vk"


def test_success_headers_report_the_tighter_request_limit() -> None:
    store = LocalStore()
    specs = specs_for(
        "b", Limits(rpm=10, rpd=3, tpm=100), estimate_tokens({}, 40, 5, embeddings=False)
    )
    d = store.acquire(specs, "r", W, T0)
    out: dict[str, str] = {}
    success_headers(specs, d, W, out)
    assert out["x-ratelimit-limit-requests"] == "3"
    assert out["x-ratelimit-remaining-requests"] == "2"
    assert out["x-ratelimit-limit-tokens"] == "100"
    assert out["x-ratelimit-remaining-tokens"] == "85"
    assert out["x-ratelimit-reset-tokens"] == "1m0s"


# --- the Lua script agrees with the Python twin, on real Redis --------------------------------

action = st.one_of(
    st.tuples(
        st.just("acquire"),
        st.integers(0, 25_000),
        st.integers(0, 4),  # rpm
        st.integers(0, 3),  # rpd
        st.integers(0, 30),  # tpm
        st.integers(1, 12),  # tokens
    ),
    st.tuples(st.just("settle"), st.integers(0, 20)),  # settle an earlier reservation to n
)


@pytest.fixture(scope="module")
def redis_prefix() -> Any:
    client = shared_redis()
    prefix = f"tollway-test:rl-parity:{uuid.uuid4().hex[:10]}"
    yield prefix
    delete_prefix(client, prefix)
    client.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(action, min_size=1, max_size=30), start=st.integers(0, DAY_MS))
def test_lua_agrees_with_python(
    redis_prefix: str, steps: list[tuple[Any, ...]], start: int
) -> None:
    asyncio.run(_parity(f"{redis_prefix}:{uuid.uuid4().hex[:8]}", steps, T0 + start))


async def _parity(prefix: str, steps: list[tuple[Any, ...]], now: int) -> None:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    remote = RedisStore(client, 2.0)
    local = LocalStore()
    base = key_base(prefix, "org", "vk")
    reserved: list[tuple[Spec, str, int]] = []
    try:
        for i, step in enumerate(steps):
            if step[0] == "acquire":
                _, dt, rpm, rpd, tpm, tokens = step
                now += dt
                specs = [
                    Spec("rpm", "log", (f"{base}:rpm", f"{base}:rpm:n"), rpm, 1),
                    Spec("rpd", "day", (f"{base}:rpd",), rpd, 1),
                    Spec("tpm", "log", (f"{base}:tpm", f"{base}:tpm:n"), tpm, tokens),
                ]
                a = local.acquire(specs, f"r{i}", W, now)
                b = await remote.acquire(specs, f"r{i}", W, now)
                assert a == b, (step, a, b)
                if a.admitted:
                    reserved.append((specs[2], f"r{i}", tokens))
            elif reserved:
                spec, mid, cost = reserved.pop(0)
                actual = step[1]
                new = member(mid, actual) if actual else ""
                a_ok = local.settle(spec.keys, member(mid, cost), new, actual - cost)
                b_ok = await remote.settle(spec.keys, member(mid, cost), new, actual - cost, W)
                assert a_ok == b_ok
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def test_redis_uses_its_own_clock_when_none_is_given(redis_prefix: str) -> None:
    async def run() -> None:
        client = Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            store = RedisStore(client, 2.0)
            seconds, micros = await client.time()
            spec = log_spec(1, 1, f"{redis_prefix}:clock")
            d = await store.acquire([spec], "a", W)
            assert d.admitted and abs(d.now_ms - (seconds * 1000 + micros // 1000)) < 2_000
            d = await store.acquire([spec], "b", W)
            assert not d.admitted and W - 2_000 < d.retry_ms <= W
        finally:
            await client.aclose()

    asyncio.run(run())


def test_queued_settlements_land_as_direct_ones_would(redis_prefix: str) -> None:
    """What ``account`` does with Redis: settlements on the core's settlement queue go in one
    pipeline and have the same outcome as settling each at once — also after Redis forgot its
    scripts."""

    async def run() -> None:
        facility = RedisFacility(RedisOptions("redis://127.0.0.1:6379/0"))
        store = RedisStore(facility.client, 2.0)
        local = LocalStore()
        spec = log_spec(10_000, 100, f"{redis_prefix}:batch", "tpm")
        replies: list[Any] = []
        try:
            for i in range(20):
                a = local.acquire([spec], f"r{i}", W, T0 + i)
                b = await store.acquire([spec], f"r{i}", W, T0 + i)
                assert a == b and a.admitted
            await facility.client.script_flush()  # a Redis restart loses loaded scripts
            queue = settlements(facility)
            before = round_trips()
            for i in range(20):
                args = (spec.keys, member(f"r{i}", 100), member(f"r{i}", i), i - 100)
                local.settle(*args)
                keys, argv = store.settle_call(*args, W)
                queue.put(store.settle_script, keys, argv, then=replies.append)
            assert len(queue) == 20 and round_trips() == before  # queued, not sent yet
            await queue.drain()
            assert queue.flushes == 1
            assert replies == [1] * 20
            probe = log_spec(10_000, 9_000, f"{redis_prefix}:batch", "tpm")
            a = local.acquire([probe], "probe", W, T0 + 30)
            b = await store.acquire([probe], "probe", W, T0 + 30)
            assert a == b and a.admitted  # 190 settled tokens + 9,000 fit; 2,000 + 9,000 would not
        finally:
            await facility.release("test")

    asyncio.run(run())
