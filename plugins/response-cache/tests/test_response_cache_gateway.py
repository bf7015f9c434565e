"""End to end with the in-process store: a real gateway and simulator, the official SDKs.

The simulator's request counter (``/_sim/stats``) says how many calls reached the upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from response_cache_support import (
    HEADER,
    Gateway,
    Simulator,
    metric,
    plugin_allow_list,
    start_gateway,
    start_simulator,
)

from tollway.testing import StaticKey, stop

CACHED = StaticKey({"response_cache": {"ttl_s": 300}}, project_id="proj_a")
SAME_PROJECT = StaticKey({"response_cache": {"ttl_s": 300}}, project_id="proj_a")
OTHER_PROJECT = StaticKey({"response_cache": {"ttl_s": 300}}, project_id="proj_b")
SHORT_TTL = StaticKey({"response_cache": {"ttl_s": 0.5}}, project_id="proj_ttl")
SAME_PROJECT_SHORT = StaticKey({"response_cache": {"ttl_s": 0.5}}, project_id="proj_a")
OFF = StaticKey(project_id="proj_a")
LIMITED = StaticKey(
    {"response_cache": {"ttl_s": 300}, "rate_limits": {"rpm": 3}}, project_id="proj_rl"
)
BROKEN = StaticKey({"response_cache": {"ttl_s": "soon"}}, project_id="proj_a")
KEYS = [CACHED, SAME_PROJECT, OTHER_PROJECT, SHORT_TTL, SAME_PROJECT_SHORT, OFF, LIMITED, BROKEN]

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cache me if you can"}]}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "cache me if you can"}],
}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("response-cache"), sim.url, KEYS)
    yield g
    stop(g.proc)


_counter = iter(range(1_000_000))


def unique(text: str = "hello") -> str:
    """A prompt no other test sent (entries live for the whole module)."""
    return f"{text} #{next(_counter)} {time.monotonic_ns()}"


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {**CHAT, "messages": [{"role": "user", "content": content}], **extra}


def messages(content: str, **extra: Any) -> dict[str, Any]:
    return {**MESSAGES, "messages": [{"role": "user", "content": content}], **extra}


# --- hits and misses ---------------------------------------------------------------------------


def test_repeated_chat_is_a_hit_with_identical_content_and_usage(
    gw: Gateway, sim: Simulator
) -> None:
    client = gw.openai(CACHED.secret)
    sim.clear()
    kwargs: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": unique()}],
    }
    first = client.chat.completions.with_raw_response.create(**kwargs)
    second = client.chat.completions.with_raw_response.create(**kwargs)
    assert first.headers[HEADER] == "miss"
    assert second.headers[HEADER] == "hit"
    a, b = first.parse(), second.parse()
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage == b.usage and a.usage is not None
    assert a.id == b.id  # the very same answer, replayed
    assert second.headers["x-langwatch-provider"] == "openai"
    assert second.headers["x-langwatch-model"] == "gpt-4o-mini"
    assert sim.count() == 1
    # The hit spent no tokens: what budgets and tpm settle with (telemetry's request line).
    rid = second.headers["x-langwatch-request-id"]
    time.sleep(0.1)
    if "tollway-telemetry" in plugin_allow_list():
        lines = [x for x in gw.logs().splitlines() if rid in x and "request_completed" in x]
        assert lines and "input_tokens=0 output_tokens=0" in lines[0]


def test_repeated_messages_is_a_hit(gw: Gateway, sim: Simulator) -> None:
    client = gw.anthropic(CACHED.secret)
    sim.clear()
    kwargs: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": unique()}],
    }
    first = client.messages.with_raw_response.create(**kwargs)
    second = client.messages.with_raw_response.create(**kwargs)
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    assert first.parse().model_dump() == second.parse().model_dump()
    assert first.http_response.content == second.http_response.content
    assert sim.count() == 1


def test_whitespace_and_field_order_do_not_matter(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    content = unique()
    a = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=(
            f'{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "{content}"}}]}}'
        ),
        headers={"Authorization": f"Bearer {CACHED.secret}", "content-type": "application/json"},
        timeout=20,
    )
    b = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=f'{{"messages":[{{"role":"user","content":"{content}"}}],"model":"gpt-4o-mini","user":"u1"}}',
        headers={"Authorization": f"Bearer {CACHED.secret}", "content-type": "application/json"},
        timeout=20,
    )
    assert (a.headers[HEADER], b.headers[HEADER]) == ("miss", "hit")
    assert a.content == b.content
    assert sim.count() == 1


def test_embeddings_and_responses_are_cached(gw: Gateway, sim: Simulator) -> None:
    client = gw.openai(CACHED.secret)
    sim.clear()
    text = unique()
    e1 = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
    e2 = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
    assert (e1.headers[HEADER], e2.headers[HEADER]) == ("miss", "hit")
    assert e1.parse().data[0].embedding == e2.parse().data[0].embedding
    r1 = client.responses.with_raw_response.create(model="gpt-4o-mini", input=text)
    r2 = client.responses.with_raw_response.create(model="gpt-4o-mini", input=text)
    assert (r1.headers[HEADER], r2.headers[HEADER]) == ("miss", "hit")
    assert r1.parse().output_text == r2.parse().output_text
    assert sim.count() == 2


# --- streams -----------------------------------------------------------------------------------


def _stream_bytes(
    gw: Gateway,
    key: StaticKey,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, bytes]:
    with httpx.stream(
        "POST",
        f"{gw.url}{path}",
        json=body,
        headers={
            "Authorization": f"Bearer {key.secret}",
            "anthropic-version": "2023-06-01",
            **(headers or {}),
        },
        timeout=20,
    ) as response:
        data = response.read()
    return response, data


@pytest.mark.parametrize(
    ("path", "make"),
    [
        ("/v1/chat/completions", lambda c: chat(c, stream=True)),
        (
            "/v1/chat/completions",
            lambda c: chat(c, stream=True, stream_options={"include_usage": True}),
        ),
        ("/v1/messages", lambda c: messages(c, stream=True)),
        ("/v1/responses", lambda c: {"model": "gpt-4o-mini", "input": c, "stream": True}),
    ],
    ids=["chat", "chat-usage", "messages", "responses"],
)
def test_stream_replay_is_byte_identical(gw: Gateway, sim: Simulator, path: str, make: Any) -> None:
    sim.clear()
    body = make(unique())
    first, a = _stream_bytes(gw, CACHED, path, body)
    second, b = _stream_bytes(gw, CACHED, path, body)
    assert first.status_code == second.status_code == 200
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    assert second.headers["content-type"].startswith("text/event-stream")
    assert a == b and len(a) > 100
    assert sim.count() == 1


def test_stream_and_non_stream_are_separate_entries(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    content = unique()
    plain = gw.post(CACHED, "/v1/chat/completions", chat(content))
    _, _ = _stream_bytes(gw, CACHED, "/v1/chat/completions", chat(content, stream=True))
    assert plain.headers[HEADER] == "miss"
    assert sim.count() == 2


def test_sdks_parse_replayed_streams(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    content = unique()
    oai = gw.openai(CACHED.secret)
    texts = []
    for _ in range(2):
        stream = oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": content}], stream=True
        )
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    assert texts[0] == texts[1] and texts[0]
    ant = gw.anthropic(CACHED.secret)
    finals = []
    for _ in range(2):
        with ant.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": content}],
        ) as s:
            finals.append(s.get_final_message())
    assert finals[0].model_dump() == finals[1].model_dump()
    assert finals[0].usage.output_tokens > 0
    assert sim.count() == 2


# --- what is not cached ------------------------------------------------------------------------


def test_bypass_header_skips_lookup_and_store(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique())
    a = gw.post(CACHED, "/v1/chat/completions", body, {"X-LangWatch-Cache": "bypass"})
    b = gw.post(CACHED, "/v1/chat/completions", body)
    c = gw.post(CACHED, "/v1/chat/completions", body, {"X-LangWatch-Cache": "bypass"})
    d = gw.post(CACHED, "/v1/chat/completions", body)
    assert [r.headers[HEADER] for r in (a, b, c, d)] == ["bypass", "miss", "bypass", "hit"]
    assert sim.count() == 3
    # The header is the gateway's: it never reaches the upstream.
    assert all(
        "x-langwatch-cache" not in {k.lower() for k, _ in r["headers"]} for r in sim.requests()
    )


def test_temperature_above_zero_is_not_cached_unless_forced(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    warm = chat(unique(), temperature=0.7)
    assert gw.post(CACHED, "/v1/chat/completions", warm).headers[HEADER] == "bypass"
    assert gw.post(CACHED, "/v1/chat/completions", warm).headers[HEADER] == "bypass"
    assert sim.count() == 2
    force = {"X-LangWatch-Cache": "force"}
    assert gw.post(CACHED, "/v1/chat/completions", warm, force).headers[HEADER] == "force"
    assert gw.post(CACHED, "/v1/chat/completions", warm, force).headers[HEADER] == "hit"
    assert sim.count() == 3
    cold = chat(unique(), temperature=0)
    assert gw.post(CACHED, "/v1/chat/completions", cold).headers[HEADER] == "miss"
    assert gw.post(CACHED, "/v1/chat/completions", cold).headers[HEADER] == "hit"


def test_unknown_header_value_is_refused(gw: Gateway) -> None:
    r = gw.post(CACHED, "/v1/chat/completions", chat("x"), {"X-LangWatch-Cache": "please"})
    assert r.status_code == 400
    assert "bypass" in r.json()["error"]["message"]


@pytest.mark.parametrize("fault", ["500", "429", "400"])
def test_errors_are_not_cached(gw: Gateway, sim: Simulator, fault: str) -> None:
    sim.clear()
    body = chat(unique())
    failed = gw.post(CACHED, "/v1/chat/completions", body, {"x-simulator-fault": fault})
    assert failed.status_code == int(fault)
    assert failed.headers[HEADER] == "miss"
    # A 429 cools the only provider down and the gateway retries it once the Retry-After has
    # passed (up to [routing] max_cooldown_wait_seconds), so the failure may be several calls.
    failures = sim.count()
    assert failures == 1 if fault != "429" else failures >= 1
    after = gw.post(CACHED, "/v1/chat/completions", body)
    assert after.status_code == 200 and after.headers[HEADER] == "miss"
    again = gw.post(CACHED, "/v1/chat/completions", body)
    assert again.headers[HEADER] == "hit"
    assert sim.count() == failures + 1  # and the success; the hit made no call


@pytest.mark.parametrize(
    ("path", "make"),
    [
        ("/v1/chat/completions", lambda c: chat(c, stream=True)),
        ("/v1/messages", lambda c: messages(c, stream=True)),
    ],
    ids=["chat", "messages"],
)
def test_mid_stream_failure_is_not_cached(
    gw: Gateway, sim: Simulator, path: str, make: Any
) -> None:
    sim.clear()
    body = make(unique())
    _, broken = _stream_bytes(gw, CACHED, path, body, {"x-simulator-fault": "midstream:2"})
    assert b"upstream_mid_stream_failure" in broken
    second, good = _stream_bytes(gw, CACHED, path, body)
    assert second.headers[HEADER] == "miss"
    third, again = _stream_bytes(gw, CACHED, path, body)
    assert third.headers[HEADER] == "hit" and again == good
    assert sim.count() == 2


def test_client_disconnect_mid_stream_is_not_cached(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique(), stream=True)
    slow = {"x-simulator-event-delay-ms": "20", "x-simulator-output-words": "20"}
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {CACHED.secret}", **slow},
        timeout=20,
    ) as response:
        assert response.headers[HEADER] == "miss"
        for _ in response.iter_bytes():
            break  # leave after the first bytes
    time.sleep(0.3)
    _, full = _stream_bytes(gw, CACHED, "/v1/chat/completions", body, slow)
    second, again = _stream_bytes(gw, CACHED, "/v1/chat/completions", body, slow)
    assert second.headers[HEADER] == "hit" and again == full
    assert sim.count() == 2


# --- keys, projects, TTL -------------------------------------------------------------------------


def test_keys_without_response_cache_are_untouched(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique())
    for _ in range(2):
        r = gw.post(OFF, "/v1/chat/completions", body)
        assert r.status_code == 200 and HEADER not in r.headers
    assert sim.count() == 2


def test_invalid_ttl_turns_the_cache_off(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique())
    for _ in range(2):
        r = gw.post(BROKEN, "/v1/chat/completions", body)
        assert r.status_code == 200 and HEADER not in r.headers
    assert sim.count() == 2
    assert "response_cache_config_invalid" in gw.logs()


def test_entries_are_per_project(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique())
    assert gw.post(CACHED, "/v1/chat/completions", body).headers[HEADER] == "miss"
    assert gw.post(SAME_PROJECT, "/v1/chat/completions", body).headers[HEADER] == "hit"
    assert gw.post(OTHER_PROJECT, "/v1/chat/completions", body).headers[HEADER] == "miss"
    assert gw.post(OTHER_PROJECT, "/v1/chat/completions", body).headers[HEADER] == "hit"
    assert sim.count() == 2


def test_entries_expire_after_ttl(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique())
    assert gw.post(SHORT_TTL, "/v1/chat/completions", body).headers[HEADER] == "miss"
    assert gw.post(SHORT_TTL, "/v1/chat/completions", body).headers[HEADER] == "hit"
    time.sleep(0.6)
    assert gw.post(SHORT_TTL, "/v1/chat/completions", body).headers[HEADER] == "miss"
    assert sim.count() == 2


def test_a_reader_judges_age_by_its_own_ttl(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique())
    assert gw.post(CACHED, "/v1/chat/completions", body).headers[HEADER] == "miss"
    time.sleep(0.6)
    # Same project, ttl_s 0.5: the 0.6 s old entry is too old for this key …
    assert gw.post(SAME_PROJECT_SHORT, "/v1/chat/completions", body).headers[HEADER] == "miss"
    # … and its fresh answer replaced it for everyone.
    assert gw.post(CACHED, "/v1/chat/completions", body).headers[HEADER] == "hit"
    assert sim.count() == 2


def test_hits_count_for_rate_limits(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique())
    outcomes = [gw.post(LIMITED, "/v1/chat/completions", body) for _ in range(4)]
    assert [r.status_code for r in outcomes] == [200, 200, 200, 429]
    assert [r.headers.get(HEADER) for r in outcomes[:3]] == ["miss", "hit", "hit"]
    assert sim.count() == 1


# --- coalescing ----------------------------------------------------------------------------------


async def _burst(
    gw: Gateway, body: dict[str, Any], headers: dict[str, str], n: int
) -> list[httpx.Response]:
    """``n`` identical requests sent at once (one fresh connection each)."""
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers)
                    for _ in range(n)
                )
            )
        )


def test_concurrent_identical_misses_make_one_upstream_call(gw: Gateway, sim: Simulator) -> None:
    slow = {"x-simulator-latency-ms": "300"}
    # The burst really is concurrent: without the cache, 50 upstream calls at once.
    sim.clear()
    started = time.monotonic()
    plain = asyncio.run(
        _burst(gw, chat(unique()), {"Authorization": f"Bearer {OFF.secret}", **slow}, 50)
    )
    assert all(r.status_code == 200 for r in plain)
    assert sim.count() == 50
    assert time.monotonic() - started < 5

    sim.clear()
    before = metric(gw, "gateway_response_cache_coalesced_total", "") or 0.0
    body = chat(unique())
    responses = asyncio.run(
        _burst(gw, body, {"Authorization": f"Bearer {CACHED.secret}", **slow}, 50)
    )
    assert all(r.status_code == 200 for r in responses)
    assert Counter(r.headers[HEADER] for r in responses) == {"miss": 1, "hit": 49}
    assert len({r.content for r in responses}) == 1
    assert sim.count() == 1
    after = metric(gw, "gateway_response_cache_coalesced_total", "")
    if after is not None:  # /metrics needs tollway-telemetry
        assert after - before == 49  # waited for the first, not served one after the other


def test_concurrent_identical_streams_make_one_upstream_call(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique(), stream=True)
    headers = {"Authorization": f"Bearer {CACHED.secret}", "x-simulator-event-delay-ms": "20"}

    async def burst() -> list[bytes]:
        async with httpx.AsyncClient(timeout=30) as client:

            async def one() -> bytes:
                async with client.stream(
                    "POST", f"{gw.url}/v1/chat/completions", json=body, headers=headers
                ) as r:
                    assert r.status_code == 200
                    return await r.aread()

            return await asyncio.gather(*(one() for _ in range(10)))

    bodies = asyncio.run(burst())
    assert len(set(bodies)) == 1
    assert sim.count() == 1


def test_coalesced_waiters_go_upstream_when_the_first_fails(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    body = chat(unique())
    auth = {"Authorization": f"Bearer {CACHED.secret}"}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as one, httpx.AsyncClient(timeout=30) as rest:
            first = asyncio.ensure_future(
                one.post(
                    f"{gw.url}/v1/chat/completions",
                    json=body,
                    headers={**auth, "x-simulator-fault": "500", "x-simulator-latency-ms": "400"},
                )
            )
            await asyncio.sleep(0.15)
            waiters = asyncio.gather(
                *(
                    rest.post(f"{gw.url}/v1/chat/completions", json=body, headers=auth)
                    for _ in range(3)
                )
            )
            return [await first, *await waiters]

    first, *rest = asyncio.run(burst())
    assert first.status_code == 500
    assert all(r.status_code == 200 for r in rest)
    # They waited for the first, which failed: each then called the upstream itself.
    assert [r.headers[HEADER] for r in rest] == ["miss"] * 3
    assert sim.count() == 4


# --- observability -----------------------------------------------------------------------------


def test_outcomes_are_counted_in_metrics(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/metrics", timeout=5)
    if r.status_code != 200:
        pytest.skip("no /metrics endpoint (tollway-telemetry is not installed)")
    for outcome in ("hit", "miss", "bypass", "force"):
        value = metric(gw, "gateway_cache_hits_total", f'outcome="{outcome}"')
        assert value is not None and value > 0, outcome
    coalesced = metric(gw, "gateway_response_cache_coalesced_total", "")
    assert coalesced is not None and coalesced >= 49


def test_no_tracebacks(gw: Gateway) -> None:
    assert "Traceback" not in gw.logs()
