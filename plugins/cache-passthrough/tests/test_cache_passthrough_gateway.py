"""End to end: a real gateway and simulator, Claude Code's captured requests, the official SDKs.

What reaches the upstream is checked byte-wise at the simulator (``/_sim/requests``), and the
simulator's prompt-caching usage shows what the markers did.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from cache_passthrough_support import (
    claude_code_headers,
    claude_code_requests,
    message_start_usage,
    start_gateway,
)

from tollway.testing import GatewayProcess, Simulator, StaticKey, start_simulator, stop
from tollway_cache_passthrough import count_markers, iter_markers, strip_messages

KEYS = {
    "none": StaticKey(name="none"),
    "respect": StaticKey(name="respect", config={"cache": {"mode": "respect"}}),
    "disable": StaticKey(name="disable", config={"cache": {"mode": "disable"}}),
    "force": StaticKey(name="force", config={"cache": {"mode": "force", "ttl_s": 300}}),
    "force1h": StaticKey(name="force1h", config={"cache": {"mode": "force", "ttl_s": 3600}}),
    "broken": StaticKey(name="broken", config={"cache": {"mode": "sometimes"}}),
}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    g = start_gateway(tmp_path_factory.mktemp("cache-passthrough"), sim.url, list(KEYS.values()))
    yield g
    stop(g.proc)


@pytest.fixture(autouse=True)
def _cold(sim: Simulator) -> None:
    sim.clear()
    # Forget the prompt prefixes it has seen, so cache usage starts from a cold cache.
    httpx.post(f"{sim.url}/_sim/reset", timeout=5)


def send_claude_code(
    gw: GatewayProcess, key: StaticKey, index: int = 0
) -> tuple[bytes, httpx.Response]:
    """Send captured request ``index`` as Claude Code does; returns the bytes sent."""
    capture = claude_code_requests()[index]
    raw = orjson.dumps(capture["body"])
    response = httpx.post(
        f"{gw.url}/v1/messages?beta=true",
        content=raw,
        headers=claude_code_headers(capture, key),
        timeout=20,
    )
    assert response.status_code == 200, response.text
    return raw, response


@pytest.mark.parametrize("name", ["none", "respect"])
def test_respect_forwards_claude_code_byte_for_byte(
    gw: GatewayProcess, sim: Simulator, name: str
) -> None:
    for index in (0, 1):
        sent, _ = send_claude_code(gw, KEYS[name], index)
        assert sim.last_body() == sent
        assert sent.count(b'"cache_control"') == 3


def test_respect_gets_cache_write_then_read(gw: GatewayProcess, sim: Simulator) -> None:
    _, first = send_claude_code(gw, KEYS["respect"])
    _, second = send_claude_code(gw, KEYS["respect"])
    one, two = message_start_usage(first.text), message_start_usage(second.text)
    assert one["cache_creation_input_tokens"] > 0 and one["cache_read_input_tokens"] == 0
    assert two["cache_read_input_tokens"] == one["cache_creation_input_tokens"]
    assert two["cache_creation_input_tokens"] == 0


def test_disable_strips_every_marker(gw: GatewayProcess, sim: Simulator) -> None:
    for index in (0, 1):
        sent, _ = send_claude_code(gw, KEYS["disable"], index)
        upstream = sim.last_body()
        assert b"cache_control" not in upstream
        expected = strip_messages(orjson.loads(sent))
        assert orjson.loads(upstream) == expected
    # No markers: no cache tokens, however often the prompt is sent.
    for _ in range(2):
        _, response = send_claude_code(gw, KEYS["disable"])
        usage = message_start_usage(response.text)
        assert usage["cache_creation_input_tokens"] == 0
        assert usage["cache_read_input_tokens"] == 0


def test_force_keeps_claude_codes_three_and_stays_within_four(
    gw: GatewayProcess, sim: Simulator
) -> None:
    for index in (0, 1):
        sent, _ = send_claude_code(gw, KEYS["force"], index)
        upstream = orjson.loads(sim.last_body())
        original = orjson.loads(sent)
        assert sim.last_body().count(b'"cache_control"') == count_markers(upstream) == 4
        kept = dict(iter_markers(upstream))
        for pos, marker in iter_markers(original):
            assert kept[pos] == marker
        assert upstream["tools"][-1]["cache_control"] == {"type": "ephemeral"}


def test_force_gets_cache_write_then_read(gw: GatewayProcess, sim: Simulator) -> None:
    _, first = send_claude_code(gw, KEYS["force"])
    _, second = send_claude_code(gw, KEYS["force"])
    one, two = message_start_usage(first.text), message_start_usage(second.text)
    assert one["cache_creation_input_tokens"] > 0
    assert two["cache_read_input_tokens"] > 0 and two["cache_creation_input_tokens"] == 0


def test_force_one_hour_marker(gw: GatewayProcess, sim: Simulator) -> None:
    send_claude_code(gw, KEYS["force1h"])
    upstream = orjson.loads(sim.last_body())
    assert upstream["tools"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    # Claude Code's own (5-minute) markers are untouched.
    assert upstream["system"][1]["cache_control"] == {"type": "ephemeral"}


def test_force_with_the_anthropic_sdk(gw: GatewayProcess, sim: Simulator) -> None:
    client = gw.anthropic(KEYS["force"].secret)
    kwargs: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "system": "You are a terse assistant. " * 40,
        "messages": [{"role": "user", "content": "Say hello in five words please"}],
    }
    first = client.messages.create(**kwargs)
    upstream = orjson.loads(sim.last_body())
    assert upstream["system"] == [
        {"type": "text", "text": kwargs["system"], "cache_control": {"type": "ephemeral"}}
    ]
    assert upstream["messages"][-1]["content"] == [
        {
            "type": "text",
            "text": "Say hello in five words please",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert (first.usage.cache_creation_input_tokens or 0) > 0
    second = client.messages.create(**kwargs)
    assert (second.usage.cache_read_input_tokens or 0) > 0


def test_respect_without_markers_sends_none(gw: GatewayProcess, sim: Simulator) -> None:
    client = gw.anthropic(KEYS["respect"].secret)
    response = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=32,
        messages=[{"role": "user", "content": "hello"}],
    )
    assert b"cache_control" not in sim.last_body()
    assert not response.usage.cache_creation_input_tokens
    assert not response.usage.cache_read_input_tokens


def _chat_with_marker(gw: GatewayProcess, key: StaticKey) -> None:
    gw.openai(key.secret).chat.completions.create(
        model="claude-sonnet-4-5",
        max_tokens=32,
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}  # type: ignore[typeddict-unknown-key]
                ],
            },
        ],
    )


def test_disable_on_chat_translated_to_anthropic(gw: GatewayProcess, sim: Simulator) -> None:
    _chat_with_marker(gw, KEYS["respect"])
    upstream = sim.requests()[-1]
    assert upstream["path"] == "/v1/messages"
    assert b"cache_control" in sim.last_body()  # the translation carries the client's marker
    _chat_with_marker(gw, KEYS["disable"])
    assert sim.requests()[-1]["path"] == "/v1/messages"
    assert b"cache_control" not in sim.last_body()


def test_invalid_mode_fails_closed(gw: GatewayProcess, sim: Simulator) -> None:
    response = httpx.post(
        f"{gw.url}/v1/messages",
        json={
            "model": "claude-sonnet-4-5",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "x"}],
        },
        headers={"x-api-key": KEYS["broken"].secret, "anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert response.status_code == 503
    assert response.headers["x-langwatch-retry-after"] == "120"
    assert "retry-after" not in response.headers
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "key_config_invalid"
    assert "'sometimes'" in error["message"]
    assert sim.requests() == []


def test_gateway_log_has_no_errors(gw: GatewayProcess) -> None:
    assert "Traceback" not in gw.logs()
