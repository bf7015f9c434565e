"""Pure parts: the cache key, the entry encoding, the in-process store, config validation."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway import RequestContext
from tollway_response_cache import (
    Entry,
    cache_digest,
    cache_scope,
    cacheable_temperature,
    decode,
    encode,
    validate_config,
)
from tollway_response_cache._entry import EntryFormatError
from tollway_response_cache._settings import ResponseCacheSettings
from tollway_response_cache._state import RequestState, Runtime
from tollway_response_cache._store import ALONE, HIT, LEAD, MemoryStore, now_ms

H: dict[str, str] = {}

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
_bodies = st.dictionaries(
    st.sampled_from(["messages", "tools", "temperature", "max_tokens", "system", "input", "n"]),
    _json,
    min_size=1,
)


# --- key -----------------------------------------------------------------------------------------


@settings(deadline=None)  # pure CPU: a loaded shared machine is no failure
@given(_bodies, st.randoms())
def test_key_ignores_top_level_order_and_whitespace(body: dict[str, Any], rnd: Any) -> None:
    items = list(body.items())
    rnd.shuffle(items)
    reparsed = orjson.loads(orjson.dumps(dict(items), option=orjson.OPT_INDENT_2))
    assert cache_digest("chat", "m", False, body, H) == cache_digest(
        "chat", "m", False, reparsed, H
    )


@settings(deadline=None)  # pure CPU: a loaded shared machine is no failure
@given(_bodies)
def test_key_ignores_fields_that_do_not_change_the_answer(body: dict[str, Any]) -> None:
    noisy = {**body, "user": "u-1", "metadata": {"user_id": "session"}, "store": True}
    assert cache_digest("chat", "m", False, body, H) == cache_digest("chat", "m", False, noisy, H)


@settings(deadline=None)  # pure CPU: a loaded shared machine is no failure
@given(_bodies, _json)
def test_key_changes_with_the_body(body: dict[str, Any], value: Any) -> None:
    changed = {**body, "messages": [body.get("messages"), value]}
    assert cache_digest("chat", "m", False, body, H) != cache_digest("chat", "m", False, changed, H)


def test_key_separates_endpoint_model_stream_and_api_headers() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    base = cache_digest("messages", "m", False, body, H)
    assert base != cache_digest("chat", "m", False, body, H)
    assert base != cache_digest("messages", "m2", False, body, H)
    assert base != cache_digest("messages", "m", True, body, H)
    assert base != cache_digest("messages", "m", False, body, {"anthropic-beta": "x"})
    # `stream: false` and no `stream` are the same request; the model is keyed as resolved.
    assert base == cache_digest("messages", "m", False, {**body, "stream": False, "model": "a"}, H)


def test_key_is_stable_across_versions() -> None:
    """Entries written by an earlier gateway version stay hits: the digest of a fixed request
    never changes (bump ``_VERSION`` on purpose to change it)."""
    body = {
        "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}],
        "user": "u",
        "max_tokens": 5,
        "model": "x",
        "stream": True,
    }
    digest = cache_digest("chat", "gpt-4o-mini", True, body, {"anthropic-beta": "b"})
    assert digest == "db2fd6bc03816040a9673e77f22508c6"


def test_nested_order_matters() -> None:
    a = {"tools": [{"schema": {"a": 1, "b": 2}}]}
    b = {"tools": [{"schema": {"b": 2, "a": 1}}]}
    assert cache_digest("chat", "m", False, a, H) != cache_digest("chat", "m", False, b, H)


def test_unserialisable_body_raises_type_error() -> None:
    with pytest.raises(TypeError):
        cache_digest("chat", "m", False, {"n": 2**70}, H)


def test_scope() -> None:
    assert cache_scope("org", "p1") != cache_scope("org", "p2")
    assert cache_scope("org", None) == "org/-"


@pytest.mark.parametrize(
    ("temperature", "cacheable"),
    [(None, True), (0, True), (0.0, True), (-1, True), (0.01, False), (1, False), ("0", False)],
)
def test_temperature(temperature: Any, cacheable: bool) -> None:
    body = {} if temperature is None else {"temperature": temperature}
    assert cacheable_temperature(body) is cacheable


# --- entry ---------------------------------------------------------------------------------------

_events = st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6)


@settings(max_examples=200)
@given(
    st.integers(200, 299),
    st.one_of(
        st.binary(max_size=200).map(lambda b: (b, None)), _events.map(lambda e: (None, tuple(e)))
    ),
    st.integers(0, 9_999_999_999_999),
    st.one_of(st.none(), st.text(max_size=10)),
)
def test_entry_round_trip(
    status: int,
    payload: tuple[bytes | None, tuple[bytes, ...] | None],
    created: int,
    name: str | None,
) -> None:
    body, events = payload
    entry = Entry(status, body, events, created, provider=name, provider_type=name, model=name)
    assert decode(encode(entry)) == entry


def test_entry_age_is_readable_without_parsing() -> None:
    entry = Entry(200, b"{}", None, 1_734_567_890_123)
    assert encode(entry)[:13] == b"1734567890123"


@pytest.mark.parametrize(
    "data", [b"", b"junk", b"0000000000000TWRC1{", b'0000000000000TWRC1{"s":200,"e":[5]}\nabc']
)
def test_decode_refuses_garbage(data: bytes) -> None:
    with pytest.raises(EntryFormatError):
        decode(data)


# --- in-process store ----------------------------------------------------------------------------


def _entry(size: int, created: int | None = None) -> Entry:
    return Entry(200, b"x" * size, None, now_ms() if created is None else created)


def test_memory_store_lru_and_limits() -> None:
    async def run() -> None:
        store = MemoryStore(max_entries=2, max_bytes=100)
        await store.put("a", _entry(10), 60_000, "")
        await store.put("b", _entry(10), 60_000, "")
        assert (await store.lookup("a", 60_000, "", 0))[0] == HIT  # a is now most recent
        await store.put("c", _entry(10), 60_000, "")
        assert (await store.lookup("b", 60_000, "", 0))[0] == ALONE  # b was evicted
        assert (await store.lookup("a", 60_000, "t", 0))[0] == HIT
        await store.put("big", _entry(90), 60_000, "")  # evicts until under 100 bytes
        assert store.bytes <= 100 and len(store) <= 2
        await store.put("huge", _entry(101), 60_000, "")  # larger than the store: not kept
        assert (await store.lookup("huge", 60_000, "t", 0)) == (LEAD, None)

    asyncio.run(run())


def test_memory_store_expiry_and_reader_max_age() -> None:
    async def run() -> None:
        store = MemoryStore(max_entries=10, max_bytes=1000)
        await store.put("old", _entry(1, created=now_ms() - 5_000), 60_000, "")
        assert (await store.lookup("old", 10_000, "", 0))[0] == HIT
        assert (await store.lookup("old", 1_000, "", 0))[0] == ALONE  # too old for this reader
        await store.put("gone", _entry(1), 1, "")
        await asyncio.sleep(0.01)
        assert (await store.lookup("gone", 60_000, "", 0))[0] == ALONE
        assert len(store) == 1

    asyncio.run(run())


# --- config --------------------------------------------------------------------------------------


def test_validate_config() -> None:
    assert validate_config({}) == []
    assert validate_config({"response_cache": {"ttl_s": 300}}) == []
    assert validate_config({"response_cache": {}}) == []
    assert validate_config({"response_cache": {"ttl_s": 0, "mode": "x"}}) == [
        "response_cache.mode: unknown field (known: ttl_s)",
        "response_cache.ttl_s: 0 must be a positive number of seconds",
    ]
    assert validate_config({"response_cache": True}) == [
        'response_cache: must be an object like {"ttl_s": 300}'
    ]


# --- single flight (in process) ------------------------------------------------------------------


def _runtime(wait: float = 5.0) -> Runtime:
    settings = ResponseCacheSettings(coalesce_wait_seconds=wait)
    return Runtime(settings, MemoryStore(100, 10_000))


def _ctx() -> RequestContext:
    return RequestContext(
        request_id="grq_rc",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 31 + "1",
        span_id="0" * 15 + "1",
    )


def test_single_flight_in_process() -> None:
    async def run() -> None:
        rt = _runtime()
        leader = RequestState("k", 60_000, 1000)
        assert await rt.obtain(leader, _ctx()) is None and leader.flight is not None
        waiters = [RequestState("k", 60_000, 1000) for _ in range(5)]
        pending = asyncio.gather(*(rt.obtain(w, _ctx()) for w in waiters))
        await asyncio.sleep(0.01)
        entry = _entry(5)
        rt.settle(leader, entry)
        assert await pending == [entry] * 5
        assert rt.flights == {}

    asyncio.run(run())


def test_waiters_give_up_after_the_bounded_wait_and_forget_the_flight() -> None:
    async def run() -> None:
        rt = _runtime(wait=0.05)
        leader = RequestState("k", 60_000, 1000)
        await rt.obtain(leader, _ctx())  # a leader that never settles
        waiter = RequestState("k", 60_000, 1000)
        assert await rt.obtain(waiter, _ctx()) is None
        assert "k" not in rt.flights  # the next request leads a fresh flight
        rt.settle(leader, None)  # the stale leader settling later is harmless

    asyncio.run(run())
