"""One Redis round trip per request (``tollway.redis_batch``), against the real Redis.

In process: deferred calls and the call that needs its answer travel in one pipeline, the
continuations run in order, the first refusal is raised once at the flush point, Redis down
reaches every continuation as its outcome, a flushed script cache is reloaded, and settlements
from many requests share one pipeline that a graceful stop drains. A call whose argument cannot
be sent fails alone, a pooled connection the server closed is replaced (each call still runs
once), and a trip cut short by its deadline leaves no reply behind for the next one.

Through a real gateway: a plugin that defers its admission call and refuses in the continuation
answers the client with its 429; a guardrail block does not hide a deferred refusal; a request
the guardrail blocks was still admitted (its deferred call ran).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import Gateway, Simulator, provider_config, start_gateway, stop

from tollway import GatewayError, RateLimitExceeded
from tollway.redis import RedisFacility, RedisOptions, round_trips
from tollway.redis_batch import SETTLE_DELAY_SECONDS, RequestBatch, settlements
from tollway.testing_plugins import plugin_site

REDIS_URL = "redis://127.0.0.1:6379/0"
INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
GET = "return redis.call('GET', KEYS[1])"


def _facility() -> RedisFacility:
    facility = RedisFacility(RedisOptions(REDIS_URL))
    facility.users["test"] = 0
    return facility


async def _warm(facility: RedisFacility, *scripts: Any) -> None:
    """Connect and load the scripts, so the counted round trips are the steady state's."""
    await facility.ping()
    for script in scripts:
        await script.load()


def test_deferred_calls_and_the_answer_needed_now_are_one_round_trip() -> None:
    key = f"test:batch:{uuid.uuid4().hex}"

    async def main() -> tuple[int, Any, list[Any]]:
        facility = _facility()
        incr, get = facility.script(INCR), facility.script(GET)
        await _warm(facility, incr, get)
        batch = RequestBatch(facility, "grq_test")
        seen: list[Any] = []
        batch.defer(incr, [key], [2], then=seen.append)
        batch.defer(incr, [key], [3], then=seen.append)
        assert seen == []  # nothing sent yet
        before = round_trips()
        value = await batch.call(get, [key])
        trips = round_trips() - before
        await batch.flush()  # nothing left: no round trip, no refusal
        assert round_trips() - before == trips
        await facility.release("test")
        return trips, value, seen

    trips, value, seen = asyncio.run(main())
    assert trips == 1
    assert value == b"5"  # the call saw both deferred increments: they ran first, in order
    assert seen == [2, 5]


def test_the_first_refusal_is_raised_once_after_every_continuation_ran(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"test:batch:{uuid.uuid4().hex}"

    async def main() -> tuple[list[str], str, bool]:
        facility = _facility()
        incr = facility.script(INCR)
        batch = RequestBatch(facility, "grq_test")
        ran: list[str] = []

        def refuse(name: str) -> Any:
            def then(outcome: Any) -> None:
                ran.append(name)
                raise RateLimitExceeded(f"refused by {name}")

            return then

        def broken(outcome: Any) -> None:
            ran.append("broken")
            raise KeyError("a plugin bug")

        async def later(outcome: Any) -> None:
            await asyncio.sleep(0)
            ran.append(f"async {outcome}")

        batch.defer(incr, [key], [1], then=refuse("first"))
        batch.defer(incr, [key], [1], then=broken)
        batch.defer(incr, [key], [1], then=refuse("second"))
        batch.defer(incr, [key], [1], then=later)
        with pytest.raises(GatewayError) as refused:
            await batch.flush()
        await batch.flush()  # raised once
        again = batch.pending
        await facility.release("test")
        return ran, str(refused.value), again

    with caplog.at_level(logging.ERROR, logger="tollway.redis"):
        ran, refusal, again = asyncio.run(main())
    assert ran == ["first", "broken", "second", "async 4"]
    assert refusal == "refused by first"
    assert not again
    assert "redis_continuation_failed" in caplog.text


def test_redis_down_is_every_continuation_s_outcome() -> None:
    async def main() -> list[Any]:
        facility = RedisFacility(RedisOptions("redis://127.0.0.1:1/0"))
        facility.users["test"] = 0
        incr = facility.script(INCR)
        batch = RequestBatch(facility)
        seen: list[Any] = []
        batch.defer(incr, ["k"], [1], then=seen.append)
        with pytest.raises(Exception) as raised:
            await batch.call(incr, ["k"], [1])
        seen.append(raised.value)
        await facility.release("test")
        return seen

    seen = asyncio.run(main())
    assert len(seen) == 2
    assert all(isinstance(o, (redis.RedisError, OSError, TimeoutError)) for o in seen)


def test_a_flushed_script_cache_is_reloaded_and_the_calls_sent_again() -> None:
    key = f"test:batch:{uuid.uuid4().hex}"

    async def main() -> tuple[Any, list[Any]]:
        facility = _facility()
        incr, get = facility.script(INCR), facility.script(GET)
        await _warm(facility, incr, get)
        await facility.client.script_flush()  # as after a Redis restart or a failover
        batch = RequestBatch(facility)
        seen: list[Any] = []
        batch.defer(incr, [key], [7], then=seen.append)
        value = await batch.call(get, [key])
        await facility.release("test")
        return value, seen

    value, seen = asyncio.run(main())
    assert seen == [7] and value == b"7"


def test_settlements_of_many_requests_share_one_pipeline_and_a_stop_drains_them() -> None:
    key = f"test:settle:{uuid.uuid4().hex}"

    async def main() -> tuple[int, int, list[Any], bytes | None]:
        facility = _facility()
        incr = facility.script(INCR)
        await _warm(facility, incr)
        queue = settlements(facility)
        assert settlements(facility) is queue  # one per process
        seen: list[Any] = []
        before = round_trips()
        for _ in range(50):
            queue.put(incr, [key], [1], then=seen.append)
        await asyncio.sleep(queue.delay * 4)
        first = round_trips() - before
        for _ in range(3):
            queue.put(incr, [key], [1])
        await facility.release("test")  # graceful stop: what is queued is sent first
        check = redis.Redis.from_url(REDIS_URL)
        value = check.get(key)
        check.delete(key)
        return first, round_trips() - before, seen, value

    first, total, seen, value = asyncio.run(main())
    assert first == 1  # 50 settlements, one pipeline
    assert total == 2  # and the three queued at the stop, one more
    assert seen == list(range(1, 51))
    assert value == b"53"


def test_settlements_of_requests_milliseconds_apart_share_one_round_trip() -> None:
    """At 100 req/s (a settlement every 10 ms) five requests share a background round trip:
    the first waits SETTLE_DELAY_SECONDS for company, and the flush does not land between
    two requests a few milliseconds apart."""
    key = f"test:settle-apart:{uuid.uuid4().hex}"

    async def main() -> tuple[int, int, bytes | None]:
        facility = _facility()
        incr = facility.script(INCR)
        await _warm(facility, incr)
        queue = settlements(facility)
        before = round_trips()
        for _ in range(4):
            queue.put(incr, [key], [1])
            await asyncio.sleep(0.01)
        queue.put(incr, [key], [1])
        during = round_trips() - before
        await asyncio.sleep(SETTLE_DELAY_SECONDS * 2)
        after = round_trips() - before
        await facility.release("test")
        check = redis.Redis.from_url(REDIS_URL)
        value = check.get(key)
        check.delete(key)
        return during, after, value

    during, after, value = asyncio.run(main())
    assert (during, after) == (0, 1)
    assert value == b"5"


def test_requests_flushing_in_one_turn_of_the_loop_share_one_round_trip() -> None:
    keys = [f"test:shared:{uuid.uuid4().hex}" for _ in range(8)]

    async def main() -> tuple[int, int, list[list[Any]], list[Any]]:
        facility = _facility()
        incr, get = facility.script(INCR), facility.script(GET)
        await _warm(facility, incr, get)
        before = round_trips("request")
        all_before = round_trips()
        seen: list[list[Any]] = [[] for _ in keys]

        async def one_request(i: int) -> Any:
            batch = RequestBatch(facility, f"grq_{i}")
            batch.defer(incr, [keys[i]], [i + 1], then=seen[i].append)
            value = await batch.call(get, [keys[i]])
            assert batch.flushes == 1
            return value

        values = await asyncio.gather(*(one_request(i) for i in range(len(keys))))
        request_trips = round_trips("request") - before
        trips = round_trips() - all_before
        await facility.release("test")
        redis.Redis.from_url(REDIS_URL).delete(*keys)
        return request_trips, trips, seen, values

    request_trips, trips, seen, values = asyncio.run(main())
    assert (request_trips, trips) == (1, 1)  # eight requests, one pipeline, on the request path
    assert seen == [[i + 1] for i in range(len(keys))]  # each continuation saw its own reply
    assert values == [str(i + 1).encode() for i in range(len(keys))]


def test_a_script_error_reaches_only_the_request_whose_call_it_was() -> None:
    key = f"test:shared:{uuid.uuid4().hex}"

    async def main() -> tuple[Any, Any]:
        facility = _facility()
        get, boom = facility.script(GET), facility.script("return redis.error_reply('boom')")
        await _warm(facility, get, boom)
        redis.Redis.from_url(REDIS_URL).set(key, "fine")

        async def call(script: Any) -> Any:
            try:
                return await RequestBatch(facility, "grq_x").call(script, [key])
            except redis.exceptions.ResponseError as exc:
                return str(exc)

        out = await asyncio.gather(call(boom), call(get))
        await facility.release("test")
        redis.Redis.from_url(REDIS_URL).delete(key)
        return out[0], out[1]

    assert asyncio.run(main()) == ("boom", b"fine")


def test_a_call_whose_argument_cannot_be_sent_fails_alone() -> None:
    key = f"test:shared:{uuid.uuid4().hex}"

    async def main() -> list[Any]:
        facility = _facility()
        incr = facility.script(INCR)
        await _warm(facility, incr)
        batch = RequestBatch(facility, "grq_x")
        seen: list[Any] = []
        batch.defer(incr, [key], [None], then=seen.append)  # None: nothing Redis can take
        batch.defer(incr, [key], [4], then=seen.append)
        seen.append(await batch.call(incr, [key], [1]))
        await facility.release("test")
        redis.Redis.from_url(REDIS_URL).delete(key)
        return seen

    bad, *rest = asyncio.run(main())
    assert isinstance(bad, redis.exceptions.DataError)
    assert rest == [4, 5]  # its neighbours in the pipeline ran, in order


def test_a_pooled_connection_that_died_is_replaced_and_the_batch_sent_once() -> None:
    key = f"test:shared:{uuid.uuid4().hex}"

    async def main() -> tuple[list[Any], int]:
        facility = _facility()
        incr = facility.script(INCR)
        await _warm(facility, incr)
        seen: list[Any] = [await RequestBatch(facility).call(incr, [key], [1])]
        # As after a Redis restart: the connection the batches keep (one: the calls were
        # sequential) is closed by the server.
        assert facility.kept_connections is not None
        (kept,) = facility.kept_connections[1]
        # The batches write without the socket timeout (the trip's deadline bounds them) but
        # hand the connection on with it: the pool's other users rely on it.
        assert kept.socket_timeout == facility.options.socket_timeout
        await kept.send_command("CLIENT", "ID")
        connection_id = await kept.read_response()
        assert redis.Redis.from_url(REDIS_URL).client_kill_filter(_id=connection_id) == 1
        seen.append(await RequestBatch(facility).call(incr, [key], [1]))
        seen.append(await RequestBatch(facility).call(incr, [key], [1]))
        await facility.release("test")
        return seen, int(redis.Redis.from_url(REDIS_URL).getdel(key) or 0)

    seen, value = asyncio.run(main())
    assert seen == [1, 2, 3] and value == 3  # each increment ran exactly once


def test_batches_keep_a_few_connections_and_give_the_rest_back_to_the_pool() -> None:
    key = f"test:shared:{uuid.uuid4().hex}"
    slow = "local t = redis.call('TIME'); local stop = t[1] * 1000000 + t[2] + 20000; " + (
        "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop; return 1"
    )

    async def main() -> tuple[int, int]:
        facility = RedisFacility(RedisOptions(REDIS_URL))
        facility.users["test"] = 8  # a pool of 8: at most 2 kept
        busy = facility.script(slow)
        await _warm(facility, busy)

        async def trip() -> Any:
            return await RequestBatch(facility).call(busy, [key])

        # Each in a turn of its own, so each is a round trip of its own, all at once.
        tasks = []
        for _ in range(5):
            tasks.append(asyncio.ensure_future(trip()))
            await asyncio.sleep(0.002)
        assert await asyncio.gather(*tasks) == [1] * 5
        pool = facility.client.connection_pool
        assert facility.kept_connections is not None
        kept, in_use = len(facility.kept_connections[1]), len(pool._in_use_connections)
        await facility.release("test")  # redis-py's count above; nothing kept after a release
        assert facility.kept_connections is None
        return kept, in_use

    kept, in_use = asyncio.run(main())
    assert kept == 2 and in_use == 2  # the other three went back to the pool


def test_a_trip_past_its_deadline_leaves_no_reply_behind_for_the_next() -> None:
    key = f"test:shared:{uuid.uuid4().hex}"
    slow = "redis.call('INCRBY', KEYS[1], 1); local t = redis.call('TIME'); " + (
        "local stop = t[1] * 1000000 + t[2] + 250000; "
        "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop; return 'slow'"
    )

    async def main() -> tuple[Any, Any]:
        # A deadline of 0.15 s (a read, a reconnect, a read), shorter than the script's 0.25 s.
        facility = RedisFacility(RedisOptions(REDIS_URL, socket_timeout=0.05, connect_timeout=0.05))
        facility.users["test"] = 0
        busy, get = facility.script(slow), facility.script(GET)
        await _warm(facility, busy, get)
        try:
            late: Any = await RequestBatch(facility).call(busy, [key])
        except (TimeoutError, redis.RedisError) as exc:  # the reply did not come in time
            late = exc
        await asyncio.sleep(0.3)  # the script has finished; its reply went to a closed socket
        value = await RequestBatch(facility).call(get, [key])
        await facility.release("test")
        redis.Redis.from_url(REDIS_URL).delete(key)
        return late, value

    late, value = asyncio.run(main())
    assert isinstance(late, (TimeoutError, redis.RedisError)), late
    assert value == b"1"  # GET's own reply (not 'slow'), and the slow script ran once


def test_round_trips_of_a_task_a_request_spawned_are_background() -> None:
    from tollway._logging import handler_task_var, request_id_var

    async def main() -> tuple[int, int]:
        facility = _facility()
        get = facility.script(GET)
        await _warm(facility, get)
        request_id_var.set("grq_handler")
        handler_task_var.set(asyncio.current_task())
        before = (round_trips("request"), round_trips("background"))
        await get(["test:none"])  # the handler's own call
        await asyncio.create_task(get(["test:none"]))  # e.g. its account hooks
        after = (round_trips("request"), round_trips("background"))
        await facility.release("test")
        return after[0] - before[0], after[1] - before[1]

    assert asyncio.run(main()) == (1, 1)


# --- through a real gateway --------------------------------------------------------------------

DEFERRING = """
from tollway import BadRequest, GuardrailBlocked, RateLimitExceeded, Verdict, hookimpl
from tollway.redis import shared
from tollway.redis_batch import request_batch

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
STATE = {}


@hookimpl
def gateway_started(gateway):
    facility = shared(gateway, "test-deferring")
    STATE["facility"] = facility
    STATE["script"] = facility.script(INCR)


@hookimpl
async def gateway_stopping(gateway):
    await STATE["facility"].release("test-deferring")


@hookimpl(tryfirst=True)
def admit(ctx):
    key = ctx.headers.get("x-test-counter")
    if not key:
        return
    refuse = ctx.headers.get("x-test-refuse")

    def then(outcome):
        ctx.response_headers["x-test-admitted"] = str(outcome)
        if refuse:
            raise RateLimitExceeded(
                f"deferred refusal after {outcome} calls", retry_after=7.0
            )

    request_batch(ctx, STATE["facility"]).defer(STATE["script"], [key], [1], then=then)


@hookimpl
def answer(ctx):
    if ctx.headers.get("x-test-answer-refuses"):
        raise BadRequest("refused by the test answer hook")
    return None


@hookimpl
def pre_guardrail(ctx):
    if ctx.headers.get("x-test-block"):
        return Verdict("block", reason="blocked by the test guardrail")
    return None
"""


@pytest.fixture(scope="module")
def deferring_gateway(
    sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("deferring")
    env = plugin_site(tmp / "site", "tollway-test-deferring", DEFERRING)
    env["GATEWAY_REDIS_URL"] = REDIS_URL
    gw = start_gateway(tmp / "gw", provider_config(sim.url), env)
    yield gw
    stop(gw.proc)


def _chat(gw: Gateway, headers: dict[str, str]) -> Any:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return gw.post(None, "/v1/chat/completions", body, headers)


def _count(key: str) -> int:
    value = redis.Redis.from_url(REDIS_URL).get(key)
    return int(value or 0)


def test_a_deferred_admission_runs_before_the_upstream_is_called(
    deferring_gateway: Gateway,
) -> None:
    key = f"test:gw:{uuid.uuid4().hex}"
    resp = _chat(deferring_gateway, {"x-test-counter": key})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-test-admitted"] == "1"
    assert _count(key) == 1


def test_a_refusal_decided_in_the_continuation_reaches_the_client(
    deferring_gateway: Gateway,
) -> None:
    key = f"test:gw:{uuid.uuid4().hex}"
    resp = _chat(deferring_gateway, {"x-test-counter": key, "x-test-refuse": "1"})
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert error["message"] == "deferred refusal after 1 calls"
    assert resp.headers["retry-after"] == "7"


def test_a_guardrail_block_does_not_hide_a_deferred_refusal(deferring_gateway: Gateway) -> None:
    key = f"test:gw:{uuid.uuid4().hex}"
    refused = _chat(
        deferring_gateway, {"x-test-counter": key, "x-test-refuse": "1", "x-test-block": "1"}
    )
    assert refused.status_code == 429, refused.text  # admission comes first, as before
    blocked = _chat(deferring_gateway, {"x-test-counter": key, "x-test-block": "1"})
    assert blocked.status_code == 403, blocked.text
    assert blocked.json()["error"]["type"] == "guardrail_blocked"
    assert _count(key) == 2  # the blocked request was admitted (counted) all the same


def _round_trips(gw: Gateway, path: str) -> float:
    import httpx

    text = httpx.get(gw.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'gateway_redis_round_trips_total{{path="{path}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_each_request_makes_one_round_trip_and_the_metric_says_so(
    deferring_gateway: Gateway,
) -> None:
    key = f"test:gw:{uuid.uuid4().hex}"
    _chat(deferring_gateway, {"x-test-counter": key})  # connections and scripts warm
    before = _round_trips(deferring_gateway, "request")
    for _ in range(5):
        assert _chat(deferring_gateway, {"x-test-counter": key}).status_code == 200
    assert _round_trips(deferring_gateway, "request") - before == 5
    assert _count(key) == 6


def test_an_answer_hook_refusal_does_not_hide_a_deferred_one(deferring_gateway: Gateway) -> None:
    key = f"test:gw:{uuid.uuid4().hex}"
    refused = _chat(
        deferring_gateway,
        {"x-test-counter": key, "x-test-refuse": "1", "x-test-answer-refuses": "1"},
    )
    assert refused.status_code == 429, refused.text
    bad = _chat(deferring_gateway, {"x-test-counter": key, "x-test-answer-refuses": "1"})
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["message"] == "refused by the test answer hook"
    assert _count(key) == 2  # both admissions were made


class _Webhook:
    """A guardrail webhook on loopback that allows everything and counts its calls."""

    def __init__(self) -> None:
        import http.server
        import threading

        calls = self.calls = [0]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                calls[0] += 1
                body = b'{"decision": "allow"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/check"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_rate_limited_request_never_reaches_a_webhook_guardrail(
    sim: Simulator, tmp_path: Path
) -> None:
    """Rate limits defer their decision to the request's round trip; a guardrail evaluator that
    calls a service asks for that decision first, so a refused request costs no webhook call."""
    hook = _Webhook()
    config = {
        "rate_limits": {"rpm": 2},
        "guardrails": {"pre": [{"evaluator": "webhook", "url": hook.url, "timeout_ms": 2000}]},
    }
    gw = start_gateway(
        tmp_path / "gw",
        provider_config(sim.url),
        {"GATEWAY_REDIS_URL": REDIS_URL},
        key_config=config,
    )
    try:
        statuses = [_chat(gw, {}).status_code for _ in range(4)]
    finally:
        stop(gw.proc)
        hook.server.shutdown()
    assert statuses == [200, 200, 429, 429]
    assert hook.calls[0] == 2  # only the admitted requests were judged by the webhook
