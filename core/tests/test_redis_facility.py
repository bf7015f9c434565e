"""tollway.redis (the gateway's one Redis client, scripts, the failure policy) and
tollway.metrics (get-or-create metrics on prometheus-client's public API)."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from redis.asyncio import Redis

from tollway import ServiceUnavailable, Stash
from tollway.metrics import counter, histogram
from tollway.redis import (
    LUA_NOW_MS,
    FailurePolicy,
    RedisOptions,
    Script,
    connect,
    describe,
    round_trip_deadline,
    shared,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


needs_redis = pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")


def _gateway(url: str | None, cluster: bool = False) -> Any:
    return SimpleNamespace(
        settings=SimpleNamespace(redis_url=url, redis_cluster=cluster), stash=Stash()
    )


# --- metrics --------------------------------------------------------------------------------


def test_counter_is_created_once_per_name() -> None:
    registry = CollectorRegistry()
    first = counter("t_requests_total", "doc", ("a",), registry=registry)
    assert isinstance(first, Counter)
    assert counter("t_requests_total", "doc", ("a",), registry=registry) is first
    assert counter("t_requests", "doc", ("a",), registry=registry) is first  # _total optional
    first.labels("x").inc()
    assert registry.get_sample_value("t_requests_total", {"a": "x"}) == 1.0


def test_a_name_asked_for_differently_is_an_error() -> None:
    registry = CollectorRegistry()
    counter("t_thing", "doc", ("a",), registry=registry)
    with pytest.raises(ValueError, match="labels"):
        counter("t_thing", "doc", ("b",), registry=registry)
    with pytest.raises(ValueError, match="Counter"):
        histogram("t_thing", "doc", ("a",), registry=registry)


def test_histogram_and_registries_are_separate() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    h1 = histogram("t_seconds", "doc", buckets=(0.1, 1.0), registry=one)
    h2 = histogram("t_seconds", "doc", buckets=(0.1, 1.0), registry=two)
    assert isinstance(h1, Histogram) and h1 is not h2
    assert histogram("t_seconds", "doc", registry=one) is h1
    h1.observe(0.05)
    assert one.get_sample_value("t_seconds_bucket", {"le": "0.1"}) == 1.0


# --- the failure policy ---------------------------------------------------------------------


class _Count:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


def _policy(**kwargs: Any) -> tuple[FailurePolicy, _Count]:
    errors = _Count()
    policy = FailurePolicy(
        logging.getLogger("tollway.test_redis"),
        "x_unavailable policy=%(policy)s during=%(during)s error=%(error)s",
        recovered="x_recovered",
        errors=errors,
        **kwargs,
    )
    return policy, errors


def test_failures_are_counted_backed_off_and_warned_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy, errors = _policy(retry_interval=60.0)
    assert policy.available()
    with caplog.at_level(logging.INFO, logger="tollway.test_redis"):
        for _ in range(3):
            policy.failed(ConnectionError("refused"), "admission")
        assert not policy.available()
        assert errors.value == 3
        policy.ok()
        policy.ok()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "x_unavailable policy=fail_open during=admission error=refused",
        "x_recovered",
    ]
    assert policy.available() and policy.last_error is None


def test_warn_once_per_back_off_and_typed_errors(caplog: pytest.LogCaptureFixture) -> None:
    policy, _ = _policy(retry_interval=0.0, warn_every=None, typed_errors=True)
    with caplog.at_level(logging.WARNING, logger="tollway.test_redis"):
        policy.failed(TimeoutError(), "lookup")
        policy.failed(OSError("gone"), "store")  # no back-off: each one is a new outage
    assert [r.getMessage().split("error=")[1] for r in caplog.records] == [
        "TimeoutError",
        "OSError: gone",
    ]


def test_refuse_fails_open_or_closed() -> None:
    policy, _ = _policy()
    policy.refuse()  # fail_open: nothing happens
    closed, _ = _policy(on_error="fail_closed", retry_interval=0.5, refusal="no", refusal_code="c")
    with pytest.raises(ServiceUnavailable) as caught:
        closed.refuse()
    assert caught.value.code == "c" and caught.value.retry_after == 1.0


def test_helpers() -> None:
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(OSError("x"), typed=True) == "OSError: x"
    assert round_trip_deadline(0.25, 0.5) == 1.0
    assert RedisOptions("redis://h").deadline == 1.0


# --- the shared client ----------------------------------------------------------------------


def test_no_url_no_redis() -> None:
    gateway = _gateway(None)
    assert shared(gateway, "a") is None
    assert shared(gateway, "b") is None


def test_one_client_for_every_user_sized_by_their_shares() -> None:
    async def run() -> None:
        gateway = _gateway(REDIS_URL)
        a = shared(gateway, "a", max_connections=10)
        assert a is not None
        client = a.client
        assert isinstance(client, Redis)
        assert client.connection_pool.max_connections == 10
        b = shared(gateway, "b", max_connections=5)
        assert b is a and b.client is client
        assert client.connection_pool.max_connections == 15  # grown for the later user
        await a.release("a")
        assert a._client is client  # "b" still uses it
        await a.release("b")
        assert a._client is None
        with pytest.raises(ValueError, match="GATEWAY_REDIS_CLUSTER"):
            shared(_gateway_with_client(), "c", cluster=True)

    def _gateway_with_client() -> Any:
        gateway = _gateway(REDIS_URL)
        facility = shared(gateway, "a")
        assert facility is not None
        assert facility.client is not None
        return gateway

    asyncio.run(run())


@needs_redis
def test_script_reloads_after_noscript_also_in_a_pipeline() -> None:
    source = LUA_NOW_MS + "return {now_ms(ARGV[1]), now_ms('')}"

    async def run() -> None:
        client = connect(RedisOptions(REDIS_URL))
        try:
            script = Script(client, source + f" -- {uuid.uuid4().hex}")
            given, server = await script([], ["123"])  # never loaded: NOSCRIPT, load, again
            assert given == 123 and server > 1_600_000_000_000
            replies = await script.pipeline([([], ["1"]), ([], ["2"])])
            assert [r[0] for r in replies] == [1, 2]
            await client.script_flush()  # a Redis restart loses loaded scripts
            replies = await script.pipeline([([], ["3"])])
            assert replies[0][0] == 3
        finally:
            await client.aclose()

    asyncio.run(run())
