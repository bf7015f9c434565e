"""Azure OpenAI end to end: the official openai and anthropic SDKs → a gateway subprocess → the
provider simulator's Azure wire (subprocess), with an OpenAI provider as the fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tollway.testing import (
    SimulatedGateway,
    Simulator,
    start_gateway,
    start_simulated_gateway,
    start_simulator,
    stop,
)
from tollway_provider_azure import DEFAULT_API_VERSION

AZURE_KEY = "azure-upstream-key-0123456789"
DEPLOYMENTS = {
    "gpt-4o": "prod-gpt4o",
    "gpt-4o-mini": "mini-deploy",
    "text-embedding-3-small": "embed-small",
    # Deleted on the Azure side: 404 DeploymentNotFound, then the OpenAI provider serves it.
    "gpt-4.1": "missing-gpt41",
}
HELLO = [{"role": "user", "content": "Say hello to the Azure lane"}]
WEATHER_FN = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER_FN["function"]["parameters"],  # type: ignore[index]
}


# --------------------------------------------------------------------------- processes


class Stack(SimulatedGateway):
    """A gateway in front of two simulators: ``sim`` (Azure, then OpenAI) and ``broken`` (an
    Azure resource answering 500 to everything, serving ``gpt-5`` first)."""

    @property
    def broken(self) -> Simulator:
        return self.sims[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sim = start_simulator()
    broken = start_simulator("--fault", "500")
    providers = [
        {
            "name": "sim-azure",
            "type": "azure",
            "base_url": sim.url,
            "api_key": AZURE_KEY,
            "priority": 0,
            "config": {"deployments": DEPLOYMENTS},
        },
        {
            "name": "azure-down",
            "type": "azure",
            "base_url": broken.url,
            "api_key": AZURE_KEY,
            "priority": 1,
            "config": {"deployments": {"gpt-5": "gpt5-deploy"}},
        },
        {
            "name": "sim-openai",
            "type": "openai",
            "base_url": f"{sim.url}/v1",
            "api_key": "sk-upstream-openai",
            "priority": 10,
            "models": ["gpt-4o", "gpt-4.1", "gpt-5"],
        },
    ]
    stack = start_simulated_gateway(
        tmp_path_factory.mktemp("azure-e2e"),
        sim,
        broken,
        cls=Stack,
        providers=providers,
        plugins=["tollway_static_keys", "tollway_provider_openai", "tollway_provider_azure"],
    )
    yield stack
    stack.stop_all()


def _assert_azure_request(stack: Stack, req: dict[str, Any], path: str, query: str) -> None:
    assert req["path"] == path
    assert req["query_string"] == query
    headers = req["headers"]
    assert headers["api-key"] == AZURE_KEY
    assert "authorization" not in headers
    assert stack.key not in json.dumps(headers)


CHAT_PATH = "/openai/deployments/prod-gpt4o/chat/completions"
VERSION = f"api-version={DEFAULT_API_VERSION}"


# --------------------------------------------------------------------------- chat


def test_chat_non_stream_reaches_the_deployment(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    reply = raw.parse()
    assert reply.choices[0].message.content.startswith("Hello from the Tollway simulator.")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.model == "prod-gpt4o"  # Azure names what answered, not what was asked
    assert raw.headers["x-langwatch-provider"] == "azure"
    assert raw.headers["x-langwatch-model"] == "gpt-4o"
    assert raw.headers["x-langwatch-fallback-count"] == "0"
    assert "apim-request-id" in raw.headers  # Azure's own headers pass through
    req = stack.upstream()
    _assert_azure_request(stack, req, CHAT_PATH, VERSION)
    # Same-format lane: the client's bytes, byte-for-byte.
    assert req["json"] == {"model": "gpt-4o", "messages": HELLO}


def test_chat_stream_text_usage_and_hidden_usage_chunk(stack: Stack) -> None:
    client = stack.openai()
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for: the injected chunk is hidden
    req = stack.upstream()
    _assert_azure_request(stack, req, "/openai/deployments/mini-deploy/chat/completions", VERSION)
    assert req["json"]["stream_options"] == {"include_usage": True}
    asked = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert asked[-1].usage is not None
    assert asked[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]


def test_chat_stream_with_azure_prompt_filter_chunk(stack: Stack) -> None:
    """Azure may open a stream with a ``prompt_filter_results`` chunk (``choices: []``)."""
    client = stack.openai(default_headers={"x-simulator-azure-filter-chunk": "1"})
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
    assert chunks[0].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from the Tollway simulator.")
    assert all(c.usage is None for c in chunks)


def test_chat_tool_calls_complete_and_streamed(stack: Stack) -> None:
    client = stack.openai()
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_FN])
    assert reply.choices[0].finish_reason == "tool_calls"
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "example", "days": 1}  # type: ignore[union-attr]
    name, args, finish = "", "", None
    for chunk in client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_FN], stream=True
    ):
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for delta in c.delta.tool_calls or ():
                name += (delta.function and delta.function.name) or ""
                args += (delta.function and delta.function.arguments) or ""
    assert (name, json.loads(args), finish) == (
        "get_weather",
        {"city": "example", "days": 1},
        "tool_calls",
    )


def test_client_query_travels_but_not_its_api_version(stack: Stack) -> None:
    stack.openai().chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        extra_query={"api-version": "1999-01-01", "trace": "on"},
    )
    req = stack.upstream()
    assert req["query_string"] == f"{VERSION}&trace=on"


def test_qualified_model_id(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model="azure/gpt-4o", messages=HELLO
    )
    assert raw.headers["x-langwatch-provider"] == "azure"
    req = stack.upstream()
    assert req["path"] == CHAT_PATH
    assert req["json"]["model"] == "gpt-4o"


# --------------------------------------------------------------------------- responses, embeddings


def test_responses_non_stream_and_stream(stack: Stack) -> None:
    client = stack.openai()
    resp = client.responses.create(model="gpt-4o", input="Say hello to the Responses lane")
    assert resp.output_text.startswith("Hello from the Tollway simulator.")
    assert resp.usage is not None and resp.usage.output_tokens > 0
    req = stack.upstream()
    _assert_azure_request(stack, req, "/openai/v1/responses", "")
    # The Responses API picks the deployment from the body's model.
    assert req["json"]["model"] == "prod-gpt4o"
    with client.responses.stream(model="gpt-4o", input="Say hello to the Responses lane") as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert text == resp.output_text
    assert final.usage is not None and final.usage.output_tokens == resp.usage.output_tokens


def test_embeddings(stack: Stack) -> None:
    result = stack.openai().embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert [len(d.embedding) for d in result.data] == [8, 8]
    assert result.usage.prompt_tokens > 0
    _assert_azure_request(
        stack, stack.upstream(), "/openai/deployments/embed-small/embeddings", VERSION
    )


# --------------------------------------------------------------------------- Anthropic clients


def test_anthropic_client_non_stream_by_translation(stack: Stack) -> None:
    raw = stack.anthropic().messages.with_raw_response.create(
        model="gpt-4o", max_tokens=200, system="Be brief.", messages=HELLO
    )
    message = raw.parse()
    assert message.content[0].text.startswith("Hello from the Tollway simulator.")  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-langwatch-provider"] == "azure"
    req = stack.upstream()
    _assert_azure_request(stack, req, CHAT_PATH, VERSION)
    assert not any(h.startswith("anthropic-") for h in req["headers"])
    assert req["json"]["messages"] == [{"role": "system", "content": "Be brief."}, *HELLO]
    assert req["json"]["max_completion_tokens"] == 200


def test_anthropic_client_stream_and_tool_use(stack: Stack) -> None:
    client = stack.anthropic()
    plain = client.messages.create(model="gpt-4o", max_tokens=200, messages=HELLO)
    with client.messages.stream(model="gpt-4o", max_tokens=200, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    with client.messages.stream(
        model="gpt-4o", max_tokens=300, messages=messages, tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_use = final.content[-1]
    assert tool_use.type == "tool_use" and tool_use.input == {"city": "example", "days": 1}
    complete = client.messages.create(
        model="gpt-4o", max_tokens=300, messages=messages, tools=[WEATHER_TOOL]
    )
    assert complete.stop_reason == "tool_use"
    assert complete.content[-1].input == {"city": "example", "days": 1}  # type: ignore[union-attr]


def test_anthropic_stream_with_azure_prompt_filter_chunk(stack: Stack) -> None:
    client = stack.anthropic(default_headers={"x-simulator-azure-filter-chunk": "1"})
    with client.messages.stream(model="gpt-4o", max_tokens=200, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Hello from the Tollway simulator.")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


# --------------------------------------------------------------------------- models and errors


def test_models_lists_the_deployment_map(stack: Stack) -> None:
    listed = {m.id: m.owned_by for m in stack.openai().models.list()}
    assert {m for m, owner in listed.items() if owner == "azure"} == set(DEPLOYMENTS) | {"gpt-5"}
    assert listed["gpt-5"] == "azure"


def test_unknown_model_is_the_gateway_model_error(stack: Stack) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        stack.openai().chat.completions.create(model="o4-mini", messages=HELLO)
    err = info.value.body
    assert isinstance(err, dict)
    assert err["code"] == "model_not_routable"
    assert '"o4-mini"' in err["message"] and "azure" in err["message"]


def test_deployment_not_found_falls_back_to_openai(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(model="gpt-4.1", messages=HELLO)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-langwatch-fallback-count"] == "1"
    assert raw.headers["x-langwatch-provider"] == "openai"
    paths = [r["path"] for r in stack.sim.requests()[-2:]]
    assert paths == ["/openai/deployments/missing-gpt41/chat/completions", "/v1/chat/completions"]


def test_azure_500_falls_back_to_openai(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(model="gpt-5", messages=HELLO)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-langwatch-fallback-count"] == "1"
    assert raw.headers["x-langwatch-provider"] == "openai"
    failed = stack.upstream(stack.broken)
    _assert_azure_request(
        stack, failed, "/openai/deployments/gpt5-deploy/chat/completions", VERSION
    )
    assert stack.upstream()["path"] == "/v1/chat/completions"


def test_content_filter_refusal_passes_through_without_fallback(stack: Stack) -> None:
    before = len(stack.sim.requests())
    with pytest.raises(openai.BadRequestError) as info:
        stack.openai().chat.completions.create(
            model="gpt-4o", messages=HELLO, extra_headers={"x-simulator-fault": "400"}
        )
    assert info.value.code == "content_filter"
    assert info.value.response.headers["x-langwatch-provider"] == "azure"
    assert len(stack.sim.requests()) == before + 1  # a 400 is never retried elsewhere


def test_midstream_failure_raises_in_both_sdks(stack: Stack) -> None:
    with pytest.raises(openai.APIError):
        for _ in stack.openai().chat.completions.create(
            model="gpt-4o",
            messages=HELLO,
            stream=True,
            extra_headers={"x-simulator-fault": "midstream:3"},
        ):
            pass
    with (
        pytest.raises(anthropic.APIStatusError),
        stack.anthropic().messages.stream(
            model="gpt-4o",
            max_tokens=200,
            messages=HELLO,
            extra_headers={"x-simulator-fault": "midstream:3"},
        ) as stream,
    ):
        for _ in stream:
            pass


# --------------------------------------------------------------------------- the simulator's wire


def test_simulator_refuses_like_azure(stack: Stack) -> None:
    url, body = stack.sim.url, {"messages": HELLO}
    key = {"api-key": "k"}
    no_key = httpx.post(f"{url}{CHAT_PATH}?{VERSION}", json=body)
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "401"
    no_version = httpx.post(f"{url}{CHAT_PATH}", json=body, headers=key)
    assert no_version.status_code == 404
    assert no_version.json() == {"error": {"code": "404", "message": "Resource not found"}}
    missing = httpx.post(
        f"{url}/openai/deployments/missing-x/chat/completions?{VERSION}", json=body, headers=key
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "DeploymentNotFound"
    bearer = httpx.post(
        f"{url}{CHAT_PATH}?{VERSION}", json=body, headers={"authorization": "Bearer entra"}
    )
    assert bearer.status_code == 200 and bearer.json()["model"] == "prod-gpt4o"
    assert "prompt_filter_results" in bearer.json()
    legacy = httpx.post(
        f"{url}/openai/responses?api-version=2025-04-01-preview",
        json={"model": "prod-gpt4o", "input": "hi"},
        headers=key,
    )
    assert legacy.status_code == 200 and legacy.json()["object"] == "response"
    dated_v1 = httpx.post(
        f"{url}/openai/v1/responses?api-version=2025-04-01-preview",
        json={"model": "prod-gpt4o", "input": "hi"},
        headers=key,
    )
    assert dated_v1.status_code == 400


# --------------------------------------------------------------------------- start-up


def test_invalid_config_refuses_start_up(tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path,
        providers=[
            {
                "name": "bad-azure",
                "type": "azure",
                "api_key": "secret-azure-key-xyz",
                "config": {"deployments": {"gpt-4o": "has space"}, "auth": "entra"},
            }
        ],
        plugins=["tollway_static_keys", "tollway_provider_azure"],
        wait=False,
    )
    try:
        assert gw.proc.wait(timeout=30) != 0
    finally:
        stop(gw.proc)
    logs = gw.logs()
    assert "providers[0]: base_url: an azure provider needs its resource endpoint" in logs
    assert "providers[0]: config.deployments.gpt-4o: 'has space'" in logs
    assert "providers[0]: config.auth: 'entra'" in logs
    assert "secret-azure-key-xyz" not in logs
    assert "Traceback" not in logs
