"""Fallback across the provider chain and the circuit breaker, with real upstreams."""

from __future__ import annotations

import base64

import httpx
import pytest
from conftest import Simulator, free_port, start_simulator, stop

HELLO = [{"role": "user", "content": "hi"}]


def two_openai(primary: str, secondary: str, extra: str = "") -> str:
    return f"""
[[providers]]
name = "primary"
type = "openai"
base_url = "{primary}/v1"
api_key = "sk-primary"
priority = 0

[[providers]]
name = "secondary"
type = "openai"
base_url = "{secondary}/v1"
api_key = "sk-secondary"
priority = 1
{extra}
"""


@pytest.fixture(scope="module")
def failing_sim():
    s = start_simulator("--fault", "500")
    yield s
    stop(s.proc)


def chat(gw, **kw):
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO, **kw},
        headers={"authorization": f"Bearer {gw.key}"},
        timeout=20,
    )


def seen_key(sim: Simulator) -> str:
    headers = {k.lower(): v for k, v in sim.last_request()["headers"]}
    return headers["authorization"]


def test_5xx_primary_falls_back_to_secondary(
    sim: Simulator, failing_sim: Simulator, gateway_factory
) -> None:
    gw = gateway_factory(two_openai(failing_sim.url, sim.url))
    r = chat(gw)
    assert r.status_code == 200, r.text
    assert r.headers["x-langwatch-fallback-count"] == "1"
    # Two credentials of one type: the type header alone cannot tell which one answered.
    assert r.headers["x-langwatch-provider"] == "openai"
    assert r.headers["x-langwatch-provider-name"] == "secondary"
    assert seen_key(sim) == "Bearer sk-secondary"
    s = chat(gw, stream=True)
    assert s.status_code == 200 and b"[DONE]" in s.content


def test_dead_primary_falls_back_and_breaker_skips_it(sim: Simulator, gateway_factory) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway_factory(two_openai(dead, sim.url))
    for _ in range(10):
        r = chat(gw)
        assert r.status_code == 200 and r.headers["x-langwatch-fallback-count"] == "1"
    # Ten connection failures in 30 s opened the primary's breaker: it is skipped, not tried.
    r = chat(gw)
    assert r.status_code == 200
    assert r.headers["x-langwatch-fallback-count"] == "0"


def test_4xx_is_not_retried_elsewhere(sim: Simulator, gateway_factory) -> None:
    gw = gateway_factory(two_openai(sim.url, sim.url))
    sim.clear()
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={"authorization": f"Bearer {gw.key}", "x-simulator-fault": "400"},
    )
    assert r.status_code == 400
    assert len(sim.requests()) == 1


def test_all_failed_is_502_summarising_attempts(failing_sim: Simulator, gateway_factory) -> None:
    gw = gateway_factory(two_openai(failing_sim.url, failing_sim.url))
    r = chat(gw)
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["type"] == "provider_error"
    assert "primary" in err["message"] and "secondary" in err["message"]
    assert r.headers["x-langwatch-fallback-count"] == "2"  # exhausted: both attempts failed
    assert r.headers["x-langwatch-provider-name"] == "secondary"  # the last one tried


def test_stream_failing_before_first_event_falls_back(sim: Simulator, gateway_factory) -> None:
    cut = start_simulator("--fault", "midstream:0")
    try:
        gw = gateway_factory(two_openai(cut.url, sim.url))
        r = chat(gw, stream=True)
        assert r.status_code == 200
        assert b"[DONE]" in r.content and b"event: error" not in r.content
        assert r.headers["x-langwatch-fallback-count"] == "1"
    finally:
        stop(cut.proc)


def test_upstream_body_reaches_secondary_unchanged(
    failing_sim: Simulator, sim: Simulator, gateway_factory
) -> None:
    gw = gateway_factory(two_openai(failing_sim.url, sim.url))
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"extra_field":1}'
    r = httpx.post(
        f"{gw.url}/v1/chat/completions", content=body, headers={"authorization": f"Bearer {gw.key}"}
    )
    assert r.status_code == 200
    assert base64.b64decode(sim.last_request()["body"]) == body


def test_max_attempts_caps_the_chain(
    failing_sim: Simulator, sim: Simulator, gateway_factory
) -> None:
    gw = gateway_factory(
        two_openai(failing_sim.url, sim.url), key_config={"fallback": {"max_attempts": 1}}
    )
    r = chat(gw)
    assert r.status_code == 500  # the one attempt's upstream error, passed through
    assert r.headers["x-langwatch-fallback-count"] == "0"  # no fallback taken
