"""The Anthropic lane end to end: official anthropic SDK → gateway → simulator."""

from __future__ import annotations

import base64
from pathlib import Path

import anthropic
import httpx
import orjson
import pytest
from conftest import Gateway, Simulator

HELLO = [{"role": "user", "content": "Say hello"}]
SSE_FIXTURES = Path(__file__).parents[1] / "plugins/simulator/src/tollway_simulator/fixtures"
FIXTURES = sorted(p.name for p in (SSE_FIXTURES / "anthropic-messages").glob("*.sse"))


def test_messages_non_streaming(gateway: Gateway, sim: Simulator) -> None:
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=HELLO
    )
    msg = raw.parse()
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.usage.input_tokens > 0
    assert raw.headers["x-langwatch-provider"] == "anthropic"
    headers = {k.lower(): v for k, v in sim.last_request()["headers"]}
    assert headers["x-api-key"] == "sk-ant-upstream"
    assert gateway.key not in str(sim.last_request()["headers"])
    assert headers["anthropic-version"]


def test_messages_streaming_text_matches_non_streaming(gateway: Gateway) -> None:
    client = gateway.anthropic()
    plain = client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=HELLO)
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, messages=HELLO
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text
    assert final.usage.output_tokens > 0
    assert final.stop_reason == "end_turn"


def test_legacy_x_api_key_and_query_string(gateway: Gateway, sim: Simulator) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/messages?beta=true",
        json={"model": "claude-haiku-4-5", "max_tokens": 10, "messages": HELLO},
        headers={
            "x-api-key": gateway.key,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "context-management-2025-06-27",
        },
    )
    assert r.status_code == 200, r.text
    req = sim.last_request()
    assert req["query_string"] == "beta=true"
    headers = {k.lower(): v for k, v in req["headers"]}
    assert headers["anthropic-beta"] == "context-management-2025-06-27"


def test_cache_tokens_reported(gateway: Gateway) -> None:
    system = [
        {"type": "text", "text": "You are terse. " * 200, "cache_control": {"type": "ephemeral"}}
    ]
    client = gateway.anthropic()
    first = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        system=system,
        messages=[{"role": "user", "content": "unique-prefix-1"}],
    )
    second = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        system=system,
        messages=[{"role": "user", "content": "unique-prefix-1"}],
    )
    assert (first.usage.cache_creation_input_tokens or 0) > 0
    assert (second.usage.cache_read_input_tokens or 0) > 0


def test_tool_use_streaming(gateway: Gateway) -> None:
    tools = [
        {
            "name": "Bash",
            "description": "run",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        }
    ]
    with gateway.anthropic().messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, messages=HELLO, tools=tools
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = next(b for b in final.content if b.type == "tool_use")
    assert block.name == "Bash" and "command" in block.input


@pytest.mark.parametrize("fixture", FIXTURES)
def test_recorded_stream_relayed_byte_for_byte(
    gateway: Gateway, sim: Simulator, fixture: str
) -> None:
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": HELLO, "stream": True},
        headers={"x-api-key": gateway.key, "x-simulator-replay": f"anthropic-messages/{fixture}"},
    ) as r:
        assert r.status_code == 200
        through = r.read()
    direct = httpx.post(
        f"{sim.url}/v1/messages",
        json={"model": "m", "max_tokens": 10, "messages": HELLO, "stream": True},
        headers={"x-simulator-replay": f"anthropic-messages/{fixture}"},
    ).content
    assert direct.startswith((SSE_FIXTURES / "anthropic-messages" / fixture).read_bytes())
    assert through == direct


def test_error_envelope_has_anthropic_shape(gateway: Gateway) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="lw_vk_live_short", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HELLO)
    body = orjson.loads(info.value.response.content)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_api_key"
    assert body["error"]["code"] == "malformed_key"
    assert info.value.response.headers["x-should-retry"] == "false"


def test_upstream_missing_max_tokens_passes_through(gateway: Gateway) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/messages",
        json={"model": "claude-sonnet-4-5", "messages": HELLO},
        headers={"x-api-key": gateway.key},
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.headers["x-langwatch-provider"] == "anthropic"


def test_mid_stream_failure_raises_in_sdk(gateway: Gateway) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        gateway.anthropic().messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=256,
            messages=HELLO,
            extra_headers={"x-simulator-fault": "midstream:3"},
        ) as stream,
    ):
        for _ in stream:
            pass
    assert "mid-stream" in str(info.value)


def test_upstream_body_forwarded_unchanged(gateway: Gateway, sim: Simulator) -> None:
    body = orjson.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 20,
            "messages": [{"role": "system", "content": "inside messages"}, *HELLO],
            "thinking": {"type": "adaptive"},
            "context_management": {"edits": []},
            "metadata": {"user_id": '{"device":"d"}'},
        }
    )
    r = httpx.post(
        f"{gateway.url}/v1/messages",
        content=body,
        headers={"authorization": f"Bearer {gateway.key}", "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert base64.b64decode(sim.last_request()["body"]) == body
