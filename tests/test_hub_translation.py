"""Chat is the hub: a third-party adapter that speaks only chat serves Anthropic clients with no
translation code of its own — the core translates around its ``send()``.

The adapter below is installed as a real plugin (``tollway.testing_plugins.plugin_site``) and
runs in a real gateway subprocess; the simulator is its chat upstream.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import orjson
import pytest
from conftest import Gateway, Simulator, start_gateway, stop

from tollway.testing_plugins import plugin_site

CHAT_ONLY = """
from tollway import Usage, hookimpl
from tollway.provider import (
    Provider, ProviderResult, forwardable_request_headers, raise_for_upstream_status,
    read_body, relay_sse, response_headers,
)
import json


class ChatOnly(Provider):
    type = "chat-only"
    endpoints = frozenset({"chat"})
    default_models = ("tiny-*",)

    async def send(self, ctx, target, http):
        assert ctx.endpoint == "chat" and ctx.path == "/v1/chat/completions", ctx.endpoint
        headers = forwardable_request_headers(ctx.headers.items())
        headers["authorization"] = "Bearer " + self.api_key
        headers["content-type"] = "application/json"
        resp = await http.post(
            self.base_url + "/chat/completions", headers, ctx.body_bytes(target.model)
        )
        await raise_for_upstream_status(resp)
        out = response_headers(resp.headers.items())
        if ctx.stream:
            return ProviderResult(resp.status, out, events=relay_sse(resp), close=resp.close)
        data = await read_body(resp)
        usage = json.loads(data).get("usage") or {}
        ctx.usage = Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        return ProviderResult(resp.status, out, body=data)


@hookimpl
def register_providers(register):
    register(ChatOnly)
"""

MESSAGES_ONLY = """
from tollway import hookimpl
from tollway.provider import (
    Provider, ProviderResult, forwardable_request_headers, raise_for_upstream_status,
    read_body, relay_sse, response_headers,
)
from tollway.formats import messages_usage
import json


class MessagesOnly(Provider):
    type = "messages-only"
    endpoints = frozenset({"messages"})
    default_models = ("mini-*",)

    async def send(self, ctx, target, http):
        assert ctx.endpoint == "messages", ctx.endpoint
        headers = forwardable_request_headers(ctx.headers.items())
        headers["x-api-key"] = self.api_key
        headers["anthropic-version"] = "2023-06-01"
        headers["content-type"] = "application/json"
        resp = await http.post(
            self.base_url + "/v1/messages", headers, ctx.body_bytes(target.model)
        )
        await raise_for_upstream_status(resp)
        out = response_headers(resp.headers.items())
        if ctx.stream:
            return ProviderResult(resp.status, out, events=relay_sse(resp), close=resp.close)
        data = await read_body(resp)
        ctx.usage = messages_usage(json.loads(data)["usage"])
        return ProviderResult(resp.status, out, body=data)


@hookimpl
def register_providers(register):
    register(MessagesOnly)
"""

#: A chat-only adapter that accounts a stream's usage on ``ctx.usage`` and shows the client no
#: usage chunk (an adapter that reads ``stream_options`` from ``ctx.body`` inside its events
#: iterator does this by accident: the core restored the Anthropic body by then).
QUIET_USAGE = """
from tollway import hookimpl
from tollway.formats import chat_usage
from tollway.provider import (
    Provider, ProviderResult, forwardable_request_headers, raise_for_upstream_status,
    read_body, relay_sse, response_headers,
)
import json


class QuietUsage(Provider):
    type = "quiet-usage"
    endpoints = frozenset({"chat"})
    default_models = ("hush-*",)

    async def send(self, ctx, target, http):
        headers = forwardable_request_headers(ctx.headers.items())
        headers["authorization"] = "Bearer " + self.api_key
        headers["content-type"] = "application/json"
        resp = await http.post(
            self.base_url + "/chat/completions", headers, ctx.body_bytes(target.model)
        )
        await raise_for_upstream_status(resp)
        out = response_headers(resp.headers.items())
        if not ctx.stream:
            data = await read_body(resp)
            ctx.usage = chat_usage(json.loads(data)["usage"])
            return ProviderResult(resp.status, out, body=data)

        def inspect(event):
            doc = json.loads(event.partition(b"data:")[2])
            if doc.get("usage"):
                ctx.usage = chat_usage(doc["usage"])
                return b""
            return None

        events = relay_sse(resp, inspect, marker=b'"usage"')
        return ProviderResult(resp.status, out, events=events, close=resp.close)


@hookimpl
def register_providers(register):
    register(QuietUsage)
"""

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def hub_gateway(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("hub")
    plugin_site(tmp / "site", "tollway-test-messages-only", MESSAGES_ONLY)
    plugin_site(tmp / "site", "tollway-test-quiet-usage", QUIET_USAGE)
    env = plugin_site(tmp / "site", "tollway-test-chat-only", CHAT_ONLY)
    gw = start_gateway(
        tmp / "gw",
        f"""
[[providers]]
name = "tiny"
type = "chat-only"
base_url = "{sim.url}/v1"
api_key = "sk-tiny"

[[providers]]
name = "mini"
type = "messages-only"
base_url = "{sim.url}"
api_key = "sk-ant-mini"

[[providers]]
name = "hush"
type = "quiet-usage"
base_url = "{sim.url}/v1"
api_key = "sk-hush"
""",
        env,
    )
    yield gw
    stop(gw.proc)


def test_anthropic_sdk_non_streaming(hub_gateway: Gateway, sim: Simulator) -> None:
    raw = hub_gateway.anthropic().messages.with_raw_response.create(
        model="tiny-1",
        max_tokens=64,
        system="be brief",
        messages=HELLO,
        metadata={"user_id": "u1"},
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["x-langwatch-provider"] == "chat-only"
    upstream = sim.last_request()
    assert upstream["path"].endswith("/v1/chat/completions")
    sent = orjson.loads(base64.b64decode(upstream["body"]))
    assert sent["model"] == "tiny-1"
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    headers = {k.lower() for k, _ in upstream["headers"]}
    assert not any(h.startswith("anthropic-") for h in headers), headers


def test_anthropic_sdk_streaming(hub_gateway: Gateway) -> None:
    client = hub_gateway.anthropic()
    with client.messages.stream(model="tiny-1", max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_anthropic_stream_shows_usage_the_adapter_accounted(hub_gateway: Gateway) -> None:
    """No chat usage chunk reached the translator, yet the client's message_delta carries the
    tokens the adapter put on ctx.usage (not zeros): Anthropic clients always see usage."""
    client = hub_gateway.anthropic()
    done = client.messages.create(model="hush-1", max_tokens=64, messages=HELLO)
    with client.messages.stream(model="hush-1", max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == done.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == done.usage.output_tokens > 0, final.usage
    assert final.usage.input_tokens > 0, final.usage  # the stream body counts a little more


def test_openai_sdk_still_native(hub_gateway: Gateway, sim: Simulator) -> None:
    done = hub_gateway.openai().chat.completions.create(model="tiny-1", messages=HELLO)  # type: ignore[arg-type]
    assert done.choices[0].message.content
    assert orjson.loads(base64.b64decode(sim.last_request()["body"]))["messages"] == HELLO


def test_untranslatable_request_is_a_400_naming_the_field(hub_gateway: Gateway) -> None:
    r = httpx.post(
        f"{hub_gateway.url}/v1/messages",
        headers={"x-api-key": hub_gateway.key, "anthropic-version": "2023-06-01"},
        content=orjson.dumps(
            {"model": "tiny-1", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}
        ),
    )
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error"


def test_opt_out_keeps_the_adapter_to_its_endpoints(sim: Simulator, tmp_path: Path) -> None:
    source = CHAT_ONLY.replace(
        'endpoints = frozenset({"chat"})',
        'endpoints = frozenset({"chat"})\n    core_translation = False',
    )
    env = plugin_site(tmp_path / "site", "tollway-test-chat-only", source)
    gw = start_gateway(
        tmp_path / "gw",
        f'[[providers]]\nname = "tiny"\ntype = "chat-only"\nbase_url = "{sim.url}/v1"\n',
        env,
    )
    try:
        with pytest.raises(anthropic.PermissionDeniedError, match=r"not served"):
            gw.anthropic().messages.create(model="tiny-1", max_tokens=8, messages=HELLO)
    finally:
        stop(gw.proc)


def test_upstream_error_reaches_the_anthropic_sdk_in_its_envelope(hub_gateway: Gateway) -> None:
    client = hub_gateway.anthropic()
    with pytest.raises(anthropic.InternalServerError) as err:
        client.with_options(max_retries=0).messages.create(
            model="tiny-1",
            max_tokens=16,
            messages=HELLO,
            extra_headers={"x-simulator-fault": "500"},
        )
    body = err.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error", body
    assert err.value.response.headers["x-langwatch-provider"] == "chat-only"


def test_messages_only_adapter_serves_the_openai_sdk(hub_gateway: Gateway, sim: Simulator) -> None:
    client = hub_gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="mini-1",
        messages=HELLO,  # type: ignore[arg-type]
        max_completion_tokens=64,
        top_p=0.5,
    )
    done = raw.parse()
    assert done.choices[0].message.content
    assert done.usage is not None and done.usage.completion_tokens > 0
    assert raw.headers["x-langwatch-provider"] == "messages-only"
    sent = orjson.loads(base64.b64decode(sim.last_request()["body"]))
    assert sent["max_tokens"] == 64 and sent["messages"][0]["role"] == "user"
    chunks = list(
        client.chat.completions.create(
            model="mini-1",
            messages=HELLO,  # type: ignore[arg-type]
            max_completion_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == done.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
