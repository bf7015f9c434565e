"""The budget reservation rides the request's Redis batch (:mod:`tollway.redis_batch`) and the
settlement the settlement queue: an in-process gateway (budgets, static keys, the OpenAI
provider against the simulator) on the real Redis, with the round trips counted
(:func:`tollway.redis.round_trips`).

Test plugins stand in for what happens around the budgets in one request: another plugin's
deferred call whose continuation refuses the request, a guardrail that blocks, a client that
leaves before the flush. In each case the reservation must be released (or never made) and the
counter left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from budgets_support import (
    REDIS_URL,
    Simulator,
    drop_redis_keys,
    free_port,
    new_prefix,
    start_simulator,
    stop,
)

from tollway import RateLimitExceeded, RequestContext, Verdict, hookimpl
from tollway.config import load_settings
from tollway.gateway import Gateway, Reply
from tollway.keys import mint_key
from tollway.redis import BACKEND_ERRORS, RedisFacility, Script, round_trips, shared
from tollway.redis_batch import request_batch, settlements
from tollway_budgets._state import STATE

SECRET = mint_key("test")
#: 10 000 micro-USD: a few simulator calls at the test prices.
LIMIT_USD = 0.01


def redis_available() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False
    return True


pytestmark = pytest.mark.skipif(not redis_available(), reason="Redis is not reachable")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


class Refuses:
    """Another admission plugin (``tryfirst``): defers a call of its own to the batch, whose
    continuation refuses the request, as a rate limit would."""

    def __init__(self) -> None:
        self.on = False
        self.replies: list[Any] = []
        self.facility: RedisFacility | None = None
        self.script: Script | None = None

    @hookimpl
    async def gateway_started(self, gateway: Gateway) -> None:
        self.facility = shared(gateway, "test-refuses")
        assert self.facility is not None
        self.script = self.facility.script("return 1")
        with contextlib.suppress(*BACKEND_ERRORS):  # (the tests of an unreachable Redis)
            await self.script.load()  # a NOSCRIPT would cost the request two more round trips

    @hookimpl
    async def gateway_stopping(self, gateway: Gateway) -> None:
        if self.facility is not None:
            await self.facility.release("test-refuses")

    @hookimpl(tryfirst=True)
    def admit(self, ctx: RequestContext) -> None:
        if not self.on:
            return
        assert self.facility is not None and self.script is not None

        def then(outcome: Any) -> None:
            self.replies.append(outcome)
            raise RateLimitExceeded(
                "refused by the test plugin", code="test_refusal", retry_after=3
            )

        request_batch(ctx, self.facility).defer(self.script, then=then)


class Guard:
    """A pre-guardrail: notes the round trips made so far and whether a Redis call is waiting
    for the flush; blocks, or holds the request until the client gives up."""

    def __init__(self) -> None:
        self.mode = "allow"
        self.seen: list[tuple[int, bool]] = []
        self.entered = asyncio.Event()

    @hookimpl
    async def pre_guardrail(self, ctx: RequestContext) -> Verdict | None:
        facility = ctx.gateway.stash[STATE].facility
        self.seen.append((round_trips(), request_batch(ctx, facility).pending))
        if self.mode == "block":
            return Verdict("block", "blocked by the test guard")
        if self.mode == "hold":
            self.entered.set()
            await asyncio.sleep(3600)
        return None


class Env:
    def __init__(self, gw: Gateway, prefix: str, refuses: Refuses, guard: Guard) -> None:
        self.gw = gw
        self.prefix = prefix
        self.refuses = refuses
        self.guard = guard

    async def call(self) -> Reply:
        body = orjson.dumps(
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "budget " * 6}],
                "max_tokens": 20,
            }
        )

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        return await self.gw.handle(
            "chat",
            "POST",
            "/v1/chat/completions",
            b"",
            {
                "authorization": f"Bearer {SECRET}",
                "content-type": "application/json",
                "content-length": str(len(body)),
            },
            chunks(),
        )

    async def done(self, reply: Reply) -> None:
        """The client has the reply (the adapter's part): ``account`` runs, and the settlement
        queue sends what it holds."""
        self.gw.finish(reply.ctx)
        await self.settled()

    async def settled(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0.02)
            await settlements(self.facility).drain()

    @property
    def facility(self) -> RedisFacility:
        facility = self.gw.stash[STATE].facility
        assert facility is not None
        return facility

    def counter(self) -> dict[str, int]:
        """The test budget's counter: spent, reserved and how many reservations it holds."""
        client = redis.Redis.from_url(REDIS_URL)
        try:
            (key,) = list(client.scan_iter(match=f"{self.prefix}:*:c"))
            fields = client.hgetall(key)
        finally:
            client.close()
        return {
            "spent": int(fields.get(b"spent", 0)),
            "reserved": int(fields.get(b"reserved", 0)),
            "reservations": sum(1 for f in fields if f.startswith(b"r:")),
        }


def run(
    tmp: Path,
    sim: Simulator,
    test: Callable[[Env], Awaitable[None]],
    *,
    redis_url: str = REDIS_URL,
    **budgets: Any,
) -> None:
    """``test`` against an in-process gateway whose key has a project budget per day of
    ``limit_usd`` (``budgets``: that and ``[plugin.budgets]`` settings)."""
    prefix = new_prefix()
    limit_usd = budgets.pop("limit_usd", LIMIT_USD)
    settings_lines = "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in budgets.items())
    config = tmp / "tollway.toml"
    config.write_text(
        f"""
[[providers]]
name = "sim"
type = "openai"
base_url = "{sim.url}/v1"
api_key = "sk-upstream"
config = {{ prices = {{ "gpt-4o" = {{ input_per_mtok = 20, output_per_mtok = 100 }} }} }}

[plugin.budgets]
redis_key_prefix = "{prefix}"
reservation_lease_seconds = 60
{settings_lines}
[[plugin.static-keys.keys]]
name = "batch"
id = "vk_batch_{uuid.uuid4().hex[:8]}"
secret = "{SECRET}"
project_id = "proj_batch"
extras = {{ budgets = [{{ scope = "project", window = "day", limit_usd = {limit_usd} }}] }}
"""
    )
    settings = load_settings(
        env={
            "TOLLWAY_PLUGINS": "tollway-budgets,tollway-static-keys,tollway-provider-openai",
            "TOLLWAY_DATA_DIR": str(tmp / "data"),
            "GATEWAY_REDIS_URL": redis_url,
            "ENVIRONMENT": "local",
        },
        config_file=config,
    )

    async def main() -> None:
        refuses, guard = Refuses(), Guard()
        gw = Gateway(settings, extra_plugins=[("test-refuses", refuses), ("test-guard", guard)])
        await gw.startup()
        try:
            await test(Env(gw, prefix, refuses, guard))
        finally:
            await gw.shutdown()

    try:
        asyncio.run(main())
    finally:
        drop_redis_keys(prefix)


def error_of(reply: Reply) -> dict[str, Any]:
    error: dict[str, Any] = orjson.loads(reply.body)["error"]
    return error


def headers_of(reply: Reply) -> dict[str, str]:
    return {k.lower(): v for k, v in reply.headers}


# --- the tests ----------------------------------------------------------------------------------


def test_the_reservation_rides_the_request_batch(tmp_path: Path, sim: Simulator) -> None:
    """Admission makes no round trip of its own: the reservation is still waiting when the
    guardrails run, and goes in the request's one round trip; the settlement goes through the
    settlement queue after the answer."""

    async def test(env: Env) -> None:
        await env.done(await env.call())  # the first seeds the counter (round trips of its own)
        before = round_trips()
        reply = await env.call()
        assert reply.status == 200, reply.body
        assert env.guard.seen[-1] == (before, True)  # pending, and nothing sent yet
        assert round_trips() - before == 1
        assert request_batch(reply.ctx, env.facility).flushes == 1
        held = env.counter()
        assert held["reservations"] == 1 and held["reserved"] > 0
        queue = settlements(env.facility)
        sent = queue.flushes
        await env.done(reply)
        assert queue.flushes == sent + 1
        cost = reply.ctx.cost_micros
        assert cost is not None and cost > 0
        assert env.counter() == {"spent": held["spent"] + cost, "reserved": 0, "reservations": 0}

    run(tmp_path, sim, test)


def test_a_budget_refusal_decided_after_the_round_trip(tmp_path: Path, sim: Simulator) -> None:
    """The decision is made in the batch's continuation; the client sees the same 402 as
    before, with its headers, and the request never goes upstream."""

    async def test(env: Env) -> None:
        spent = 0
        for _ in range(30):
            reply = await env.call()
            await env.done(reply)
            if reply.status != 200:
                break
            spent += reply.ctx.cost_micros or 0
        assert reply.status == 402, reply.body
        error = error_of(reply)
        assert error["type"] == "budget_exceeded" and error["code"] == "budget_exceeded"
        assert "project:day" in error["message"] and "proj_batch" in error["message"]
        headers = headers_of(reply)
        assert headers["x-should-retry"] == "false"
        assert "retry-after" in headers or "x-langwatch-retry-after" in headers
        assert headers["x-langwatch-budget-warning"] == f"project:{spent * 100 // 10_000}"
        assert reply.ctx.attempts == []
        assert reply.ctx.span_attributes["langwatch.budget.decision"] == "block"
        assert env.counter() == {"spent": spent, "reserved": 0, "reservations": 0}

    run(tmp_path, sim, test)


def test_another_plugins_refusal_in_the_same_batch_releases_the_reservation(
    tmp_path: Path, sim: Simulator
) -> None:
    """Another plugin's call in the same pipeline refuses the request: both calls made one
    round trip, the budget's continuation still ran (the reservation was made), and
    ``account`` releases it."""

    async def test(env: Env) -> None:
        await env.done(await env.call())
        before = env.counter()
        env.refuses.on = True
        trips = round_trips()
        reply = await env.call()
        assert round_trips() - trips == 1
        assert reply.status == 429
        assert error_of(reply)["code"] == "test_refusal"
        assert headers_of(reply)["retry-after"] == "3"
        assert env.refuses.replies == [1]
        assert env.counter()["reservations"] == 1  # made in the same pipeline
        await env.done(reply)
        assert env.counter() == before

    run(tmp_path, sim, test)


def test_a_guardrail_refusal_releases_the_reservation(tmp_path: Path, sim: Simulator) -> None:
    async def test(env: Env) -> None:
        await env.done(await env.call())
        before = env.counter()
        env.guard.mode = "block"
        reply = await env.call()
        assert error_of(reply)["type"] == "guardrail_blocked", reply.body
        assert env.counter()["reservations"] == 1  # the core flushed before answering
        await env.done(reply)
        assert env.counter() == before

    run(tmp_path, sim, test)


def test_a_client_that_leaves_before_the_flush(tmp_path: Path, sim: Simulator) -> None:
    """The client is gone while the guardrails run: the deferred reservation is never sent,
    and settling the reservation that was never made changes nothing."""

    async def test(env: Env) -> None:
        await env.done(await env.call())
        before = env.counter()
        env.guard.mode = "hold"
        task = asyncio.create_task(env.call())
        await env.guard.entered.wait()
        trips, queue = round_trips(), settlements(env.facility)
        sent = queue.flushes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await env.settled()  # `account` ran (the core's finish on cancel) and settled
        assert queue.flushes == sent + 1 and round_trips() - trips == 1
        assert env.counter() == before

    run(tmp_path, sim, test)


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_redis_unreachable_in_the_continuation(tmp_path: Path, sim: Simulator, policy: str) -> None:
    """The batch's round trip fails: the continuation applies ``on_redis_error`` as the direct
    call did — 503 ``budget_counters_unavailable``, or admitted without a decision."""

    async def test(env: Env) -> None:
        reply = await env.call()
        if policy == "fail_closed":
            assert reply.status == 503, reply.body
            assert error_of(reply)["code"] == "budget_counters_unavailable"
        else:
            assert reply.status == 200, reply.body
            assert reply.ctx.span_attributes["langwatch.budget.decision"] == "fail_open"
        assert request_batch(reply.ctx, env.facility).flushes == 1
        env.gw.finish(reply.ctx)
        await asyncio.sleep(0.05)

    run(
        tmp_path,
        sim,
        test,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        on_redis_error=policy,
        redis_retry_interval_seconds=0,
    )
