"""Routing strategies of the config file's providers (``[routing]``), with real simulators:
the weighted split, the shift to the faster provider, upstream 429s absorbed by a cool-down,
and failover to an Anthropic provider for an OpenAI client that sent no ``max_tokens``."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import Simulator, start_simulator, stop

HELLO = [{"role": "user", "content": "hi"}]


def openai_provider(name: str, url: str, extra: str = "") -> str:
    return f"""
[[providers]]
name = "{name}"
type = "openai"
base_url = "{url}/v1"
api_key = "sk-{name}"
{extra}
"""


@pytest.fixture(scope="module")
def fast() -> Iterator[Simulator]:
    s = start_simulator("--latency-ms", "0")
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def slow() -> Iterator[Simulator]:
    s = start_simulator("--latency-ms", "40")
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def throttled() -> Iterator[Simulator]:
    s = start_simulator("--fault", "429:2")
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def broken() -> Iterator[Simulator]:
    s = start_simulator("--fault", "500")
    yield s
    stop(s.proc)


def _calls(gw, n: int, **body) -> Iterator[httpx.Response]:
    with httpx.Client(
        base_url=gw.url, headers={"authorization": f"Bearer {gw.key}"}, timeout=20
    ) as client:
        for _ in range(n):
            yield client.post(
                "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO, **body}
            )


def test_weighted_three_to_one_split(fast: Simulator, sim: Simulator, gateway_factory) -> None:
    gw = gateway_factory(
        '[routing]\nstrategy = "weighted"\n'
        + openai_provider("a", fast.url, "weight = 3")
        + openai_provider("b", sim.url, "weight = 1")
    )
    seen: Counter[str] = Counter()
    # 1,000 calls at ±5 % go through the control plane (test_routing_policies_e2e.py); here
    # 400 at ±8 % (3.7 standard deviations) keep the file fast.
    for r in _calls(gw, 400):
        assert r.status_code == 200, r.text
        assert r.headers["x-langwatch-provider"] == "openai"  # the type: the wire contract
        seen[r.headers["x-langwatch-provider-name"]] += 1
    assert 0.67 * 400 <= seen["a"] <= 0.83 * 400, seen
    assert seen["a"] + seen["b"] == 400


def test_weight_zero_is_fallback_only(fast: Simulator, broken: Simulator, gateway_factory) -> None:
    gw = gateway_factory(
        '[routing]\nstrategy = "weighted"\n'
        + openai_provider("down", broken.url, "weight = 1")
        + openai_provider("spare", fast.url, "weight = 0")
    )
    for r in _calls(gw, 5):
        assert r.status_code == 200, r.text
        assert r.headers["x-langwatch-provider-name"] == "spare"
        assert r.headers["x-langwatch-fallback-count"] == "1"


def test_least_latency_moves_traffic_to_the_fast_provider(
    fast: Simulator, slow: Simulator, gateway_factory
) -> None:
    gw = gateway_factory(
        '[routing]\nstrategy = "least-latency"\n'
        + openai_provider("slow", slow.url)
        + openai_provider("fast", fast.url)
    )
    names = [r.headers["x-langwatch-provider-name"] for r in _calls(gw, 250)]
    late = Counter(names[50:])
    assert late["fast"] >= 0.9 * 200, late


def test_least_busy_spreads_sequential_calls(
    fast: Simulator, sim: Simulator, gateway_factory
) -> None:
    gw = gateway_factory(
        '[routing]\nstrategy = "least-busy"\n'
        + openai_provider("one", fast.url)
        + openai_provider("two", sim.url)
    )
    seen = Counter(r.headers["x-langwatch-provider-name"] for r in _calls(gw, 100))
    assert seen["one"] >= 20 and seen["two"] >= 20, seen


def test_upstream_429_is_absorbed(throttled: Simulator, fast: Simulator, gateway_factory) -> None:
    gw = gateway_factory(
        openai_provider("limited", throttled.url, "priority = 0")
        + openai_provider("spare", fast.url, "priority = 1")
    )
    before = throttled.stats()["requests"]
    replies = list(_calls(gw, 40))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.is_error]
    assert {r.headers["x-langwatch-provider-name"] for r in replies} == {"spare"}
    # Retry-After: 2 cooled the credential down: it was not asked again for each request.
    asked = throttled.stats()["requests"] - before
    assert 1 <= asked < 20, asked


def test_every_provider_cooling_down_is_a_429_saying_when(
    throttled: Simulator, gateway_factory
) -> None:
    gw = gateway_factory(
        "[routing]\nmax_cooldown_wait_seconds = 0\n" + openai_provider("limited", throttled.url)
    )
    first, second = _calls(gw, 2)
    assert first.status_code == 429  # the upstream's own 429, passed through
    assert second.status_code == 429
    error = second.json()["error"]
    assert error["code"] == "providers_cooling_down"
    assert "cooling down" in error["message"]
    assert int(second.headers["retry-after"]) >= 1


def test_openai_client_without_max_tokens_fails_over_to_anthropic(
    broken: Simulator, sim: Simulator, gateway_factory
) -> None:
    gw = gateway_factory(
        "[routing]\ndefault_max_tokens = 100000\n"
        + openai_provider("openai-main", broken.url, 'models = ["claude-haiku-4-5"]')
        + f"""
[[providers]]
name = "claude-backup"
type = "anthropic"
base_url = "{sim.url}"
api_key = "sk-ant-backup"
"""
    )
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="claude-haiku-4-5", messages=HELLO)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-langwatch-provider"] == "anthropic"
    assert raw.headers["x-langwatch-fallback-count"] == "1"
    # The model's maximum output from the price table, under the configured cap.
    assert raw.headers["x-langwatch-default-max-tokens"] == "64000"
    assert sim.recorded_request()["json"]["max_tokens"] == 64000
    # A client that sent max_tokens gets it as it is, and no header.
    raw = client.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", messages=HELLO, max_tokens=33
    )
    assert "x-langwatch-default-max-tokens" not in raw.headers
    assert sim.recorded_request()["json"]["max_tokens"] == 33


def test_default_max_tokens_cap(broken: Simulator, sim: Simulator, gateway_factory) -> None:
    gw = gateway_factory(
        f"""
[[providers]]
name = "claude"
type = "anthropic"
base_url = "{sim.url}"
api_key = "sk-ant"
"""
    )
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="claude-haiku-4-5", messages=HELLO)
    assert raw.headers["x-langwatch-default-max-tokens"] == "4096"  # the default cap


def test_bad_routing_settings_say_what_to_fix(tmp_path) -> None:
    from tollway.config import ConfigError, load_settings

    cfg = tmp_path / "t.toml"
    cfg.write_text(
        '[routing]\nstrategy = "fastest"\n[[providers]]\nname = "a"\ntype = "openai"\nweight = -2\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(env={}, config_file=cfg)
    text = str(exc.value)
    assert "routing.strategy" in text and "least-latency" in text
    assert "providers[0].weight" in text


def test_cool_down_is_shared_across_replicas(tmp_path, fast: Simulator, gateway_factory) -> None:
    # Retry-After: 30, so the cool-down outlives the test; unique names keep other runs' stats
    # (same Redis) apart.
    limited = start_simulator("--fault", "429:30")
    try:
        tag = uuid.uuid4().hex[:8]
        config = openai_provider(f"limited-{tag}", limited.url, "priority = 0") + (
            openai_provider(f"spare-{tag}", fast.url, "priority = 1")
        )
        env = {"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0"}
        one, two = gateway_factory(config, env), gateway_factory(config, env)
        (first,) = _calls(one, 1)
        assert first.status_code == 200 and first.headers["x-langwatch-fallback-count"] == "1"
        assert limited.stats()["requests"] == 1
        # The other replica learns the cool-down from Redis (published at once, read every
        # second) and skips the credential without ever asking it.
        time.sleep(3)
        for r in _calls(two, 5):
            assert r.status_code == 200, r.text
            assert r.headers["x-langwatch-provider-name"] == f"spare-{tag}"
            assert r.headers["x-langwatch-fallback-count"] == "0"
        assert limited.stats()["requests"] == 1
    finally:
        stop(limited.proc)
