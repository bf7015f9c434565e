"""Rate limits through a real gateway process with the in-process backend (no Redis): every
route, rpd, tpm pre-check and settlement, provider limits with fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import anthropic
import httpx
import openai
import pytest
from rate_limits_support import (
    HELLO,
    Gateway,
    Key,
    anthropic_provider,
    openai_provider,
    start_gateway,
)

from tollway.testing import Simulator, start_simulator, stop

DIM = "x-langwatch-ratelimit-dimension"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


KEYS = {
    "chat": Key({"rate_limits": {"rpm": 1}}),
    "messages": Key({"rate_limits": {"rpm": 1}}),
    "responses": Key({"rate_limits": {"rpm": 1}}),
    "embeddings": Key({"rate_limits": {"rpm": 1}}),
    "stream": Key({"rate_limits": {"rpm": 1}}),
    "rpd": Key({"rate_limits": {"rpd": 1, "rpm": 100}}),
    "tpm": Key({"rate_limits": {"tpm": 1000}}),
    "release": Key({"rate_limits": {"tpm": 1000}}),
    "headers": Key({"rate_limits": {"rpm": 10, "rpd": 1000, "tpm": 100_000}}),
    "none": Key({}),
    "broken": Key({"rate_limits": {"rpm": "ten"}}),
    "zero": Key({"rate_limits": {"rpm": 0}}),
}


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(
        tmp_path_factory.mktemp("gw"),
        providers=[
            openai_provider(sim.url),
            anthropic_provider(sim.url),
            # Two credentials of one type, for the fallback test (model "fb-model" only).
            openai_provider(
                sim.url, "primary", api_key="sk-primary", priority=0, rpm=1, models=["fb-model"]
            ),
            openai_provider(
                sim.url, "secondary", api_key="sk-secondary", priority=1, rpm=1, models=["fb-model"]
            ),
            openai_provider(sim.url, "only", tpm=1000, models=["tpm-model"]),
        ],
        keys=list(KEYS.values()),
    )
    yield g
    stop(g.proc)


def assert_rpm_refusal(exc: openai.APIStatusError | anthropic.APIStatusError) -> None:
    assert exc.status_code == 429
    headers = exc.response.headers
    assert headers[DIM] == "rpm"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert "x-langwatch-provider" not in headers
    assert "x-should-retry" not in headers
    assert "1 requests per minute (rpm)" in str(exc)


# --- every route goes through the key's limits ---------------------------------------------------


def test_chat_route_is_limited(gw: Gateway) -> None:
    client = gw.openai(KEYS["chat"].secret)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert raw.headers["x-ratelimit-limit-requests"] == "1"
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert_rpm_refusal(err.value)
    assert err.value.code == "rate_limit_exceeded"


def test_messages_route_is_limited(gw: Gateway) -> None:
    client = gw.anthropic(KEYS["messages"].secret)
    client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=HELLO)
    assert_rpm_refusal(err.value)
    assert err.value.body["type"] == "error"  # type: ignore[index]


def test_responses_route_is_limited(gw: Gateway) -> None:
    client = gw.openai(KEYS["responses"].secret)
    client.responses.create(model="gpt-4o-mini", input="hi")
    with pytest.raises(openai.RateLimitError) as err:
        client.responses.create(model="gpt-4o-mini", input="hi")
    assert_rpm_refusal(err.value)


def test_embeddings_route_is_limited(gw: Gateway) -> None:
    client = gw.openai(KEYS["embeddings"].secret)
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.RateLimitError) as err:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert_rpm_refusal(err.value)


def test_streaming_is_limited_too(gw: Gateway) -> None:
    assert gw.chat(KEYS["stream"], stream=True).status_code == 200
    r = gw.chat(KEYS["stream"], stream=True)
    assert r.status_code == 429 and r.headers[DIM] == "rpm"


# --- rpd, tpm, headers, config errors ------------------------------------------------------------


def test_rpd_refusal_tells_clients_not_to_retry(gw: Gateway) -> None:
    assert gw.chat(KEYS["rpd"]).status_code == 200
    r = gw.chat(KEYS["rpd"])
    assert r.status_code == 429
    assert r.headers[DIM] == "rpd"
    now = datetime.now(UTC)
    to_midnight = (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)) - now
    if to_midnight.total_seconds() > 61:
        # A wait past 60 s: no Retry-After (Codex would sleep on it), the wait in our header.
        assert r.headers["x-should-retry"] == "false"
        assert "retry-after" not in r.headers and "retry-after-ms" not in r.headers
        wait = int(r.headers["x-langwatch-retry-after"])
    else:
        wait = int(r.headers["retry-after"])
    assert abs(wait - to_midnight.total_seconds()) < 5
    error = r.json()["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert "00:00 UTC" in error["message"] and "rate_limits.rpd" in error["message"]


def test_tpm_precheck_and_settlement_with_actual_usage(gw: Gateway) -> None:
    key = KEYS["tpm"]
    # max_tokens alone over the limit: refused, and retrying cannot help.
    r = gw.chat(key, max_tokens=2000)
    assert r.status_code == 429 and r.headers[DIM] == "tpm"
    assert r.headers["x-should-retry"] == "false"
    assert "lower max_tokens" in r.json()["error"]["message"]
    # Reserves ~600 (max_tokens) + ~input; the simulator answers with far fewer tokens.
    first = gw.chat(key, max_tokens=600)
    assert first.status_code == 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 400
    used = first.json()["usage"]["total_tokens"]
    assert used < 100
    # If the 600-token estimate still counted, 900 more could not pass; the settled actual
    # usage lets it through (settlement runs in `account`, right after the response).
    deadline = time.monotonic() + 3
    while True:
        second = gw.chat(key, max_tokens=900)
        if second.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert second.status_code == 200, second.text
    # Now ~used + ~second's actual are in the window: a request for more than the rest waits.
    third = gw.chat(key, max_tokens=950)
    assert third.status_code == 429 and third.headers[DIM] == "tpm"
    assert "x-should-retry" not in third.headers
    assert 1 <= int(third.headers["retry-after"]) <= 60
    message = third.json()["error"]["message"]
    assert "1000 tokens per minute (tpm)" in message and "950 (max_tokens)" in message


def test_tpm_reservation_is_released_when_no_provider_answered(gw: Gateway) -> None:
    key = KEYS["release"]
    failed = gw.chat(key, max_tokens=900, headers={"x-simulator-fault": "500"})
    assert failed.status_code == 500 and "x-langwatch-provider" in failed.headers
    # Had the 900-token reservation stayed, this one could not pass for a minute.
    deadline = time.monotonic() + 3
    while (r := gw.chat(key, max_tokens=900)).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)


def test_success_headers(gw: Gateway) -> None:
    r = gw.chat(KEYS["headers"], max_tokens=100)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-requests"] == "10"
    assert r.headers["x-ratelimit-remaining-requests"] == "9"
    assert r.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert r.headers["x-ratelimit-limit-tokens"] == "100000"
    assert 99_800 < int(r.headers["x-ratelimit-remaining-tokens"]) < 99_900
    assert DIM not in r.headers


def test_keys_without_limits_are_untouched(gw: Gateway) -> None:
    for _ in range(3):
        r = gw.chat(KEYS["none"])
        assert r.status_code == 200
        assert "x-ratelimit-limit-requests" not in r.headers


def test_invalid_limits_fail_closed_naming_the_field(gw: Gateway) -> None:
    r = gw.chat(KEYS["broken"])
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "rate_limit_config_invalid"
    assert "rate_limits.rpm" in error["message"]


def test_a_zero_limit_refuses_everything_without_retry(gw: Gateway) -> None:
    r = gw.chat(KEYS["zero"])
    assert r.status_code == 429 and r.headers[DIM] == "rpm"
    assert r.headers["x-should-retry"] == "false"


# --- per-provider limits ---------------------------------------------------------------------


def test_provider_limit_falls_back_then_refuses(gw: Gateway, sim: Simulator) -> None:
    key = KEYS["none"]
    seen = []
    for _ in range(2):
        sim.clear()
        r = gw.chat(key, model="fb-model")
        assert r.status_code == 200, r.text
        assert r.headers["x-langwatch-provider"] == "openai"
        assert r.headers["x-langwatch-fallback-count"] == "0"
        (req,) = sim.requests()
        seen.append(dict(req["headers"])["authorization"])
    # Both are type openai: the credential the simulator saw tells them apart.
    assert seen == ["Bearer sk-primary", "Bearer sk-secondary"]
    sim.clear()
    r = gw.chat(key, model="fb-model")
    assert r.status_code == 429
    assert r.headers[DIM] == "rpm"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    error = r.json()["error"]
    assert error["code"] == "provider_rate_limited"
    assert "every provider" in error["message"] and "'secondary'" in error["message"]
    assert sim.requests() == []


def test_provider_tpm_reservation_is_settled(gw: Gateway) -> None:
    key = KEYS["none"]
    assert gw.chat(key, model="tpm-model", max_tokens=700).status_code == 200
    deadline = time.monotonic() + 3
    while (r := gw.chat(key, model="tpm-model", max_tokens=700)).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)
    # A provider refusal that ends the chain: 429 naming the provider and the dimension.
    r = gw.chat(key, model="tpm-model", max_tokens=950)
    assert r.status_code == 429 and r.headers[DIM] == "tpm"
    assert "'only'" in r.json()["error"]["message"]


def test_no_redis_readiness_check_without_redis(gw: Gateway) -> None:
    assert "redis" not in httpx.get(f"{gw.url}/readyz", timeout=5).json()["checks"]


def test_denials_are_counted_in_metrics(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/metrics", timeout=5)
    if r.status_code == 404:
        pytest.skip("no /metrics endpoint (tollway-telemetry is not installed)")
    lines = r.text.splitlines()
    denied = [line for line in lines if line.startswith("gateway_rate_limit_denied_total{")]
    assert any('dimension="rpm"' in line and not line.endswith(" 0.0") for line in denied)
    assert any(line.startswith("gateway_rate_limit_redis_errors_total") for line in lines)
