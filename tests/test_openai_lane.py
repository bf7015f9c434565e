"""The OpenAI lanes end to end: official SDK → gateway → simulator."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import Gateway, Simulator

HELLO = [{"role": "user", "content": "Say hello"}]
SSE_FIXTURES = Path(__file__).parents[1] / "plugins/simulator/src/tollway_simulator/fixtures"
FIXTURES = sorted(p.name for p in (SSE_FIXTURES / "openai-chat").glob("*.sse"))


def upstream_body(sim: Simulator) -> dict:
    return orjson.loads(base64.b64decode(sim.last_request()["body"]))


def upstream_headers(sim: Simulator) -> dict[str, str]:
    return {k.lower(): v for k, v in sim.last_request()["headers"]}


def test_chat_non_streaming_matches_upstream(gateway: Gateway, sim: Simulator) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    completion = raw.parse()
    direct = httpx.post(
        f"{sim.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO}
    ).json()
    assert completion.choices[0].message.content == direct["choices"][0]["message"]["content"]
    assert completion.usage is not None and completion.usage.total_tokens > 0
    h = raw.headers
    assert re.fullmatch(r"grq_[0-9A-HJKMNP-TV-Z]{26}", h["x-langwatch-request-id"])
    assert h["x-request-id"] == h["x-langwatch-request-id"] == h["x-langwatch-gateway-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", h["x-langwatch-trace-id"])
    assert re.fullmatch(r"[0-9a-f]{16}", h["x-langwatch-span-id"])
    assert h["x-langwatch-gateway-version"]
    assert h["x-langwatch-provider"] == "openai"
    assert h["x-langwatch-model"] == "gpt-4o-mini"
    assert h["x-langwatch-fallback-count"] == "0"


def test_upstream_gets_provider_credential_and_exact_bytes(
    gateway: Gateway, sim: Simulator
) -> None:
    body = b'{"model": "gpt-4o",   "messages": [{"role":"user","content":"x"}], "zz_unknown": [1]}'
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={
            "authorization": f"Bearer {gateway.key}",
            "content-type": "application/json",
            "x-custom-header": "kept",
        },
    )
    assert r.status_code == 200, r.text
    req = sim.last_request()
    assert base64.b64decode(req["body"]) == body  # byte-for-byte, unknown fields included
    headers = upstream_headers(sim)
    assert headers["authorization"] == "Bearer sk-upstream-openai"
    assert gateway.key not in str(req["headers"])
    assert headers["x-custom-header"] == "kept"


def test_chat_streaming_content_identical(gateway: Gateway, sim: Simulator) -> None:
    stream = gateway.openai().chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # The client did not ask for usage: the usage-only chunk the gateway added is removed.
    assert all(c.choices for c in chunks)
    assert upstream_body(sim)["stream_options"] == {"include_usage": True}
    direct = httpx.post(
        f"{sim.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HELLO, "stream": True},
    ).text
    direct_text = "".join(
        (orjson.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for line in direct.splitlines()
        if line.startswith("data: {")
    )
    assert text == direct_text and text


@pytest.mark.parametrize("fixture", FIXTURES)
def test_recorded_stream_relayed_byte_for_byte(
    gateway: Gateway, sim: Simulator, fixture: str
) -> None:
    req = {
        "model": "gpt-4o",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=req,
        headers={
            "authorization": f"Bearer {gateway.key}",
            "x-simulator-replay": f"openai-chat/{fixture}",
        },
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        through = r.read()
    direct = httpx.post(
        f"{sim.url}/v1/chat/completions",
        json={"model": "m", "max_tokens": 10, "messages": HELLO, "stream": True},
        headers={"x-simulator-replay": f"openai-chat/{fixture}"},
    ).content
    assert direct.startswith((SSE_FIXTURES / "openai-chat" / fixture).read_bytes())
    assert through == direct


def test_responses_api_stream_and_not(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.responses.create(model="gpt-5", input="hello")
    assert resp.output_text
    events = list(client.responses.create(model="gpt-5", input="hello", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta")


def test_embeddings_base64_default(gateway: Gateway) -> None:
    emb = gateway.openai().embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0


def test_models_list(gateway: Gateway) -> None:
    ids = [m.id for m in gateway.openai().models.list()]
    assert "gpt-4o-mini" in ids and "claude-sonnet-4-5" in ids


def test_tool_call_round_trip(gateway: Gateway) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    client = gateway.openai()
    first = client.chat.completions.create(model="gpt-4o", messages=HELLO, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert "city" in orjson.loads(call.function.arguments)
    streamed = list(
        client.chat.completions.create(model="gpt-4o", messages=HELLO, tools=tools, stream=True)
    )
    names = [
        tc.function.name
        for c in streamed
        if c.choices
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function and tc.function.name
    ]
    assert names == ["get_weather"]


def test_traceparent_is_continued(gateway: Gateway) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=HELLO,
        extra_headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    assert raw.headers["x-langwatch-trace-id"] == trace
    assert raw.headers["x-langwatch-span-id"] != "00f067aa0ba902b7"


@pytest.mark.parametrize("fault,status", [("500", 500), ("503", 503), ("400", 400), ("429", 429)])
def test_upstream_error_passes_through(
    gateway: Gateway, sim: Simulator, fault: str, status: int
) -> None:
    import openai

    with pytest.raises(openai.APIStatusError) as info:
        gateway.openai().chat.completions.create(
            model="gpt-4o", messages=HELLO, extra_headers={"x-simulator-fault": fault}
        )
    err = info.value
    assert err.status_code == status
    assert err.response.headers["x-langwatch-provider"] == "openai"
    assert "x-langwatch-ratelimit-dimension" not in err.response.headers
    direct = httpx.post(
        f"{sim.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={"x-simulator-fault": fault},
    )
    assert err.response.content == direct.content
    if status == 429:
        assert err.response.headers["retry-after"]


def test_mid_stream_failure_raises_in_sdk(gateway: Gateway) -> None:
    import openai

    stream = gateway.openai().chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        stream=True,
        extra_headers={"x-simulator-fault": "midstream:3"},
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received, "the events that arrived before the failure reach the client"
    assert "mid-stream" in str(info.value)
