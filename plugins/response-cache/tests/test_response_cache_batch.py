"""The response cache on the request's Redis batch (tollway.redis_batch), against the real
shared Redis (a unique key prefix per run, deleted afterwards).

An in-process gateway runs the plugin's real hooks (``gateway_started``, ``answer``,
``post_guardrail``, ``account``); what another plugin's admission would defer is a real script
deferred on the same batch, whose continuation refuses the request when a test says so, as a
rate limit's or a budget's does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from response_cache_support import SHARED_REDIS, delete_prefix, shared_redis, unique_prefix

import tollway_response_cache as rc
from tollway import BadRequest, Principal, RateLimitExceeded, RequestContext
from tollway._types import Attempt
from tollway.config import PluginSelection, Settings
from tollway.gateway import Gateway, ResponseView
from tollway.redis import RedisFacility, round_trips, shared
from tollway.redis_batch import flush_request, request_batch, settlements
from tollway_response_cache._provider import REQUEST
from tollway_response_cache._state import Runtime
from tollway_response_cache._store import ALONE, LEAD, RedisStore

P = Principal(
    key_id="vk_batch",
    display_prefix="lw_vk_live_batch",
    organization_id="org_batch",
    project_id="proj_batch",
    config={"response_cache": {"ttl_s": 300}},
)
ANSWER = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": []})
#: Stands for another plugin's admission script (a counter it increments).
PROBE = "return redis.call('INCR', KEYS[1])"

_n = iter(range(1_000_000))


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


def _run(prefix: str, test: Callable[[Gateway], Awaitable[None]]) -> None:
    """``test`` with an in-process gateway whose response cache uses the shared Redis."""

    async def main() -> None:
        settings = Settings(
            redis_url=SHARED_REDIS,
            plugins=PluginSelection(allow=["tollway-response-cache"]),
            plugin_sections={"response-cache": {"key_prefix": prefix}},
        )
        gateway = Gateway(settings)
        await rc.gateway_started(gateway)
        try:
            # Connected, scripts loaded: the round trips counted below are the requests' own.
            await _facility(gateway).ping()
            await _facility(gateway).script(PROBE).load()
            await _runtime(gateway).store._lookup.load()  # type: ignore[union-attr]
            await test(gateway)
        finally:
            await rc.gateway_stopping(gateway)

    asyncio.run(main())


def _facility(gw: Gateway) -> RedisFacility:
    facility = shared(gw, "response-cache-test")
    assert facility is not None
    return facility


def _runtime(gw: Gateway) -> Runtime:
    runtime = gw.stash[rc._RUNTIME]
    assert isinstance(runtime.store, RedisStore)
    return runtime


def _ctx(gw: Gateway, body: dict[str, Any]) -> RequestContext:
    return RequestContext(
        request_id=f"grq_batch{next(_n)}",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 31 + "1",
        span_id="0" * 15 + "1",
        gateway=gw,
        body=body,
        model=body["model"],
        principal=P,
    )


def _body() -> dict[str, Any]:
    content = f"batched #{next(_n)} {asyncio.get_running_loop().time()}"
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}


class Admission:
    """A deferred admission call on the request's batch, and what its continuation saw."""

    def __init__(self, gw: Gateway, ctx: RequestContext, prefix: str, refuse: bool) -> None:
        self.outcomes: list[Any] = []
        self.refuse = refuse
        facility = _facility(gw)
        script = facility.script(PROBE)
        request_batch(ctx, facility).defer(script, [f"{prefix}:probe"], then=self.then)

    def then(self, outcome: Any) -> None:
        self.outcomes.append(outcome)
        if self.refuse:
            raise RateLimitExceeded(
                "rate limit exceeded: rpm", code="rate_limit_rpm", retry_after=7
            )


def _keys(gw: Gateway, ctx: RequestContext) -> tuple[str, str]:
    state = ctx.stash[REQUEST]
    entry, lock = _runtime(gw).store._keys(state.key)  # type: ignore[union-attr]
    return entry, lock


async def _upstream_answered(ctx: RequestContext, status: int = 200) -> None:
    """What the core does for a miss the upstream answered: the body, then ``account``."""
    if status < 400:
        rc.post_guardrail(ctx, ResponseView(status, ANSWER))
    ctx.status = status
    outcome = "ok" if status < 400 else "error"
    ctx.attempts.append(Attempt("openai", "openai", "gpt-4o-mini", outcome, status, "", 0.01))
    await rc.account(ctx)


def test_the_lookup_rides_the_admission_round_trip_and_the_store_is_queued(
    prefix: str,
) -> None:
    async def test(gw: Gateway) -> None:
        client = shared_redis()
        facility = _facility(gw)
        queue = settlements(facility)
        body = _body()
        ctx = _ctx(gw, body)
        admission = Admission(gw, ctx, prefix, refuse=False)
        before = round_trips()
        assert await rc.answer(ctx) is None  # a miss
        assert round_trips() - before == 1  # the admission's call and the lookup together
        assert isinstance(admission.outcomes[0], int)  # its continuation ran with the reply
        assert request_batch(ctx, facility).flushes == 1
        await flush_request(ctx)  # the core's flush point: nothing left to send
        assert round_trips() - before == 1
        assert ctx.response_headers[rc.HEADER] == "miss"
        entry_key, lock_key = _keys(gw, ctx)
        assert client.get(lock_key)  # this request leads: it holds the fill lock

        before = round_trips()
        await _upstream_answered(ctx)
        assert round_trips() == before  # storing is off the request path: queued
        assert len(queue) == 1 and not client.exists(entry_key)

        # Meanwhile an identical request is answered from memory, without asking Redis.
        again = _ctx(gw, body)
        result = await rc.answer(again)
        assert result is not None and result.body == ANSWER
        assert again.response_headers[rc.HEADER] == "hit" and round_trips() == before

        await queue.drain()
        assert client.get(entry_key) and not client.exists(lock_key)
        assert 290_000 < client.pttl(entry_key) <= 300_000
        assert _runtime(gw).flights == {}

        # And from Redis afterwards, in one round trip.
        third = _ctx(gw, body)
        before = round_trips()
        result = await rc.answer(third)
        assert result is not None and result.body == ANSWER and round_trips() - before == 1
        client.close()

    _run(prefix, test)


def test_a_deferred_refusal_is_raised_by_answer_and_frees_the_lock_at_once(prefix: str) -> None:
    async def test(gw: Gateway) -> None:
        client = shared_redis()
        facility = _facility(gw)
        body = _body()
        ctx = _ctx(gw, body)
        Admission(gw, ctx, prefix, refuse=True)
        before = round_trips()
        with pytest.raises(RateLimitExceeded) as refused:
            await rc.answer(ctx)
        assert round_trips() - before == 1
        # The client sees the refusal as before the batch: no cache outcome on it.
        reply = gw.error_reply(ctx, refused.value)
        headers = dict(reply.headers)
        assert reply.status == 429 and headers["Retry-After"] == "7"
        assert rc.HEADER not in headers and rc.HEADER not in ctx.response_headers
        assert orjson.loads(reply.body)["error"]["code"] == "rate_limit_rpm"
        # Its in-process flight is over, and the lock its lookup took is released (no "failed"
        # mark: it never called the upstream, so the next request, here or on another replica,
        # leads).
        assert _runtime(gw).flights == {}
        _, lock_key = _keys(gw, ctx)
        assert len(settlements(facility)) == 1
        await settlements(facility).drain()
        assert not client.exists(lock_key)
        state = ctx.stash[REQUEST]
        other = RedisStore(facility.client, prefix, 2)
        assert await other.lookup(state.key, 60_000, "another-replica", 5_000) == (LEAD, None)
        # account afterwards (the core runs it for the error reply) releases nothing twice.
        await rc.account(ctx)
        assert len(settlements(facility)) == 0
        client.close()

    _run(prefix, test)


def test_a_refused_request_does_not_wait_for_an_identical_leader(prefix: str) -> None:
    async def test(gw: Gateway) -> None:
        client = shared_redis()
        facility = _facility(gw)
        body = _body()
        leader = _ctx(gw, body)
        assert await rc.answer(leader) is None
        flight = _runtime(gw).flights[leader.stash[REQUEST].key]

        refused = _ctx(gw, body)
        admission = Admission(gw, refused, prefix, refuse=True)
        # coalesce_wait_seconds is 60: waiting on the leader would hang this well past the bound.
        with pytest.raises(RateLimitExceeded):
            await asyncio.wait_for(rc.answer(refused), 10)
        assert admission.outcomes and not flight.done()  # the leader's flight is untouched
        assert rc.HEADER not in refused.response_headers

        # The leader's upstream call fails: the lock is released with the short "failed" mark, so
        # other replicas stop waiting and call the upstream themselves.
        await _upstream_answered(leader, 503)
        assert flight.done() and flight.result() is None
        await settlements(facility).drain()
        _, lock_key = _keys(gw, leader)
        assert client.get(lock_key) == b"!" and 0 < client.pttl(lock_key) <= 2_000
        other = RedisStore(facility.client, prefix, 2)
        state = leader.stash[REQUEST]
        assert await other.lookup(state.key, 60_000, "another-replica", 5_000) == (ALONE, None)
        client.close()

    _run(prefix, test)


def test_a_refused_hit_is_refused(prefix: str) -> None:
    async def test(gw: Gateway) -> None:
        facility = _facility(gw)
        body = _body()
        first = _ctx(gw, body)
        assert await rc.answer(first) is None
        await _upstream_answered(first)
        await settlements(facility).drain()
        refused = _ctx(gw, body)
        Admission(gw, refused, prefix, refuse=True)
        before = round_trips()
        with pytest.raises(RateLimitExceeded):
            await rc.answer(refused)
        assert round_trips() - before == 1 and rc.HEADER not in refused.response_headers
        assert len(settlements(facility)) == 0  # a hit takes no lock: nothing to release

    _run(prefix, test)


def test_a_bad_cache_header_is_refused_after_the_deferred_admission(prefix: str) -> None:
    async def test(gw: Gateway) -> None:
        ctx = _ctx(gw, _body())
        ctx.headers = {rc.HEADER: "sometimes"}
        admission = Admission(gw, ctx, prefix, refuse=False)
        with pytest.raises(BadRequest):
            await rc.answer(ctx)
        assert admission.outcomes  # the admission's call was made, its continuation ran
        refused = _ctx(gw, _body())
        refused.headers = {rc.HEADER: "sometimes"}
        Admission(gw, refused, prefix, refuse=True)
        with pytest.raises(RateLimitExceeded):  # the earlier refusal wins, as at the flush point
            await rc.answer(refused)

    _run(prefix, test)
