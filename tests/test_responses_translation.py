"""The Responses API through the chat hub, end to end: ``openai.OpenAI().responses`` (what Codex
CLI speaks) against providers that have no Responses API — a third-party chat-only adapter, the
Anthropic adapter (a Messages upstream) and a third-party Messages-only adapter — with the
simulator as their upstream, in a real gateway subprocess with its ledger.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from conftest import Gateway, Simulator, start_gateway, stop
from openai._models import validate_type
from openai._streaming import SSEDecoder
from openai.types.responses import ResponseStreamEvent
from test_hub_translation import CHAT_ONLY, MESSAGES_ONLY

from tollway.testing_plugins import plugin_site

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
#: (model, the provider type that answers it, the upstream path the simulator sees)
LANES = {
    "chat-only": ("tiny-1", "chat-only", "/v1/chat/completions"),
    "anthropic": ("claude-haiku-4-5", "anthropic", "/v1/messages"),
    "messages-only": ("mini-1", "messages-only", "/v1/messages"),
}


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("responses")
    plugin_site(tmp / "site", "tollway-test-messages-only", MESSAGES_ONLY)
    env = plugin_site(tmp / "site", "tollway-test-chat-only", CHAT_ONLY)
    gateway = start_gateway(
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
name = "sim-anthropic"
type = "anthropic"
base_url = "{sim.url}"
api_key = "sk-ant-upstream"

[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{sim.url}/v1"
api_key = "sk-upstream-openai"
""",
        env,
    )
    yield gateway
    stop(gateway.proc)


def upstream_body(sim: Simulator) -> dict[str, Any]:
    return orjson.loads(base64.b64decode(sim.last_request()["body"]))  # type: ignore[no-any-return]


@pytest.mark.parametrize("lane", sorted(LANES))
def test_non_streaming(gw: Gateway, sim: Simulator, lane: str) -> None:
    model, provider, path = LANES[lane]
    raw = gw.openai().responses.with_raw_response.create(
        model=model, instructions="be brief", input="Say hello", max_output_tokens=64
    )
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_")
    assert "Say hello" in response.output_text  # the simulator echoes the prompt
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert raw.headers["x-langwatch-provider"] == provider
    assert raw.headers["x-langwatch-model"] == model
    assert "x-langwatch-params-dropped" not in raw.headers
    assert sim.last_request()["path"] == path
    sent = upstream_body(sim)
    if path == "/v1/chat/completions":
        assert sent["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Say hello"},
        ]
        assert sent["max_tokens"] == 64
    else:
        assert sent["system"] == [{"type": "text", "text": "be brief"}]
        assert sent["max_tokens"] == 64 and sent["messages"][0]["role"] == "user"


@pytest.mark.parametrize("lane", sorted(LANES))
def test_streaming(gw: Gateway, lane: str) -> None:
    model, provider, _ = LANES[lane]
    client = gw.openai()
    stream = client.responses.create(model=model, input="Say hello", stream=True)
    events = list(stream)
    assert stream.response.headers["x-langwatch-provider"] == provider
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text and final.output_text == text
    assert final.usage is not None and final.usage.output_tokens > 0
    # The SDK's helper, accumulating the events itself.
    with client.responses.stream(model=model, input="Say hello") as helper:
        helper_text = "".join(e.delta for e in helper if e.type == "response.output_text.delta")
        done = helper.get_final_response()
    assert helper_text == done.output_text == text
    assert done.usage is not None and done.usage.input_tokens > 0


@pytest.mark.parametrize("lane", sorted(LANES))
def test_function_tool_round_trip(gw: Gateway, sim: Simulator, lane: str) -> None:
    """The model calls the tool; its output goes back as Codex sends it (the earlier output
    items plus a function_call_output, no previous_response_id); the model answers in text."""
    model, _, _ = LANES[lane]
    client = gw.openai()
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(model=model, input=[question], tools=[WEATHER])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    assert "city" in orjson.loads(call.arguments)
    sent = upstream_body(sim)
    tools = sent["tools"]
    assert tools[0].get("function", tools[0])["name"] == "get_weather"

    history = [item.model_dump(exclude_none=True) for item in first.output]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}
    second = client.responses.create(
        model=model,
        input=[question, *history, result],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text and not [i for i in second.output if i.type == "function_call"]
    upstream = upstream_body(sim)["messages"]
    if sim.last_request()["path"] == "/v1/chat/completions":
        assert upstream[-2]["tool_calls"][0]["id"] == call.call_id
        assert upstream[-1] == {
            "role": "tool",
            "tool_call_id": call.call_id,
            "content": "sunny, 21 C",
        }
    else:
        assert upstream[-2]["content"][-1]["type"] == "tool_use"
        assert upstream[-1]["content"][0]["tool_use_id"] == call.call_id

    # Streamed, the call arrives as argument deltas.
    events = list(
        client.responses.create(model=model, input=[question], tools=[WEATHER], stream=True)
    )  # type: ignore[list-item]
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments and "city" in orjson.loads(deltas)
    final = events[-1].response
    assert [i.type for i in final.output][-1] == "function_call"


#: A custom tool (free-form input), as Codex declares ``exec`` and ``apply_patch``.
RUN_JS = {
    "type": "custom",
    "name": "run_js",
    "description": "Runs JavaScript",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
}


@pytest.mark.parametrize("lane", sorted(LANES))
def test_custom_tool_round_trip(gw: Gateway, sim: Simulator, lane: str) -> None:
    """A custom tool reaches the upstream as a function taking ``{"input": <string>}``; the
    model's call of it is a ``custom_tool_call`` with that string as its ``input`` (the
    simulator fills a string parameter with "example"), complete and streamed; its output
    goes back as a tool result."""
    model, _, path = LANES[lane]
    client = gw.openai()
    question: Any = {"role": "user", "content": "Run the script"}
    tools: Any = [WEATHER, RUN_JS]
    choice: Any = {"type": "custom", "name": "run_js"}
    first = client.responses.create(model=model, input=[question], tools=tools, tool_choice=choice)
    assert [item.type for item in first.output][-1] == "custom_tool_call", first.output
    call = first.output[-1]
    assert call.type == "custom_tool_call"
    assert (call.name, call.input) == ("run_js", "example") and call.call_id
    sent = upstream_body(sim)
    assert sim.last_request()["path"] == path
    if path == "/v1/chat/completions":
        function = sent["tools"][1]["function"]
        schema = function["parameters"]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "run_js"}}
    else:
        function = sent["tools"][1]
        schema = function["input_schema"]
        assert sent["tool_choice"] == {"type": "tool", "name": "run_js"}
    assert function["name"] == "run_js"
    assert "lark grammar" in function["description"] and "start: /.+/" in function["description"]
    assert schema["required"] == ["input"] and schema["properties"]["input"]["type"] == "string"

    history = [item.model_dump(exclude_none=True) for item in first.output]
    result = {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "ok"}
    second = client.responses.create(model=model, input=[question, *history, result], tools=tools)
    assert second.output_text and [i.type for i in second.output] == ["message"]
    upstream = upstream_body(sim)["messages"]
    if path == "/v1/chat/completions":
        sent_call = upstream[-2]["tool_calls"][0]
        assert sent_call["id"] == call.call_id
        assert orjson.loads(sent_call["function"]["arguments"]) == {"input": "example"}
        assert upstream[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "ok"}
    else:
        tool_use = upstream[-2]["content"][-1]
        assert tool_use["type"] == "tool_use" and tool_use["input"] == {"input": "example"}
        assert upstream[-1]["content"][0]["tool_use_id"] == call.call_id

    # Streamed: the input arrives whole when the call's item closes.
    stream = client.responses.create(
        model=model, input=[question], tools=tools, tool_choice=choice, stream=True
    )
    events = list(stream)
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" not in types
    delta = "".join(e.delta for e in events if e.type == "response.custom_tool_call_input.delta")
    done = next(e for e in events if e.type == "response.custom_tool_call_input.done")
    assert delta == done.input == "example"
    final = events[-1].response
    assert final.output[-1].type == "custom_tool_call" and final.output[-1].input == "example"
    assert final.output[-1].id == done.item_id
    # The SDK's helper, accumulating the events itself.
    with client.responses.stream(
        model=model, input=[question], tools=tools, tool_choice=choice
    ) as helper:
        accumulated = helper.get_final_response()
    assert accumulated.output[-1].type == "custom_tool_call"
    assert accumulated.output[-1].input == "example"


@pytest.mark.parametrize("lane", ["chat-only", "anthropic"])
def test_upstream_error_reaches_the_sdk_in_the_openai_envelope(gw: Gateway, lane: str) -> None:
    model, provider, _ = LANES[lane]
    with pytest.raises(openai.InternalServerError) as err:
        gw.openai().responses.create(
            model=model, input="hi", extra_headers={"x-simulator-fault": "500"}
        )
    body = err.value.response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    assert err.value.response.headers["x-langwatch-provider"] == provider


def test_stored_state_is_a_400_saying_what_to_do(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    with pytest.raises(openai.BadRequestError) as err:
        gw.openai().responses.create(model="tiny-1", input="more", previous_response_id="resp_1")
    error = err.value.response.json()["error"]
    assert error["type"] == "bad_request" and error["param"] == "previous_response_id"
    assert "send the whole conversation in 'input'" in error["message"]
    assert err.value.response.headers["x-should-retry"] == "false"
    assert sim.requests() == []  # refused before any upstream call


def test_dropped_parameters_are_reported(gw: Gateway) -> None:
    raw = gw.openai().responses.with_raw_response.create(
        model="claude-haiku-4-5",
        input="hi",
        reasoning={"effort": "low"},
        text={"format": {"type": "json_object"}},
        top_p=0.5,
    )
    assert raw.parse().output_text
    # reasoning: the Responses → chat step; text.format: Anthropic has no response_format.
    dropped = raw.headers["x-langwatch-params-dropped"].split(",")
    assert dropped[0] == "reasoning" and "text.format" in dropped


def test_dropped_names_from_the_client_are_encoded_in_the_header(gw: Gateway) -> None:
    """A tool type or field the client made up (a line break, a comma, an accent in it) is
    dropped and named in the header percent-encoded: never a 500, never a forged header line."""
    tools = [
        {"type": "web\r\nX-Forged: 1"},
        {"type": "function", "name": "f", "parameters": {"type": "object"}, "caf\u00e9,x": 1},
    ]
    r = gw.post(None, "/v1/responses", {"model": "claude-haiku-4-5", "input": "hi", "tools": tools})
    assert r.status_code == 200, r.text
    assert "x-forged" not in r.headers
    dropped = r.headers["x-langwatch-params-dropped"].split(",")
    assert "tools.web%0D%0AX-Forged%3A%201" in dropped and "tools.caf%C3%A9%2Cx" in dropped


def test_a_translated_response_cannot_be_retrieved(gw: Gateway) -> None:
    client = gw.openai()
    created = client.responses.create(model="tiny-1", input="remember me")
    with pytest.raises(openai.NotFoundError, match="was not stored"):
        client.responses.retrieve(created.id)


def test_native_providers_keep_the_responses_api(gw: Gateway, sim: Simulator) -> None:
    created = gw.openai().responses.create(model="gpt-4o", input="hi")
    assert sim.last_request()["path"] == "/v1/responses"
    assert not created.id.startswith("resp_tw_")


def _ledger(gw: Gateway, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        with sqlite3.connect(gw.data_dir / "tollway.db", timeout=10) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute(
                "SELECT * FROM ledger WHERE request_id = ?", (request_id,)
            ).fetchone()
        if row is not None:
            return dict(row)
        assert time.monotonic() < deadline, f"no ledger row for {request_id}"
        time.sleep(0.1)


def test_the_ledger_counts_a_translated_call_as_the_same_chat_call(gw: Gateway) -> None:
    """Usage and cost of a Responses call on the Anthropic lane are those of the chat call it
    becomes; the stream's too."""
    client = gw.openai()
    chat = client.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5",
        messages=[{"role": "user", "content": "Count my tokens"}],
        max_tokens=40,
    )
    responses = client.responses.with_raw_response.create(
        model="claude-haiku-4-5", input="Count my tokens", max_output_tokens=40
    )
    chat_row = _ledger(gw, chat.headers["x-request-id"])
    row = _ledger(gw, responses.headers["x-request-id"])
    for field in ("input_tokens", "output_tokens", "cost_usd", "model", "provider_id"):
        assert row[field] == chat_row[field], field
    assert row["cost_usd"] > 0
    usage = responses.parse().usage
    assert usage is not None
    billed_input = (
        row["input_tokens"] + row["cache_read_input_tokens"] + row["cache_creation_input_tokens"]
    )
    assert (billed_input, row["output_tokens"]) == (usage.input_tokens, usage.output_tokens)

    stream = client.responses.create(
        model="claude-haiku-4-5", input="Count my tokens", max_output_tokens=40, stream=True
    )
    final = list(stream)[-1].response
    streamed = _ledger(gw, stream.response.headers["x-request-id"])
    assert (streamed["input_tokens"], streamed["output_tokens"]) == (
        final.usage.input_tokens,
        final.usage.output_tokens,
    )
    assert streamed["cost_usd"] > 0


def test_the_ledger_counts_a_chat_only_stream_from_the_translated_usage(gw: Gateway) -> None:
    """The chat-only adapter relays its stream without counting: the core counts it as the
    chunks pass, exactly as the client's final usage says."""
    stream = gw.openai().responses.create(model="tiny-1", input="Count my tokens", stream=True)
    final = list(stream)[-1].response
    row = _ledger(gw, stream.response.headers["x-request-id"])
    assert final.usage is not None and final.usage.output_tokens > 0
    assert (row["input_tokens"], row["output_tokens"]) == (
        final.usage.input_tokens,
        final.usage.output_tokens,
    )


CODEX = Path(__file__).parent / "agents" / "data"


@pytest.mark.parametrize(
    "capture", ["codex-0.169.0-responses-tool-gpt-5.5.json", "codex-0.169.0-responses-tool.json"]
)
def test_codex_requests_reach_a_claude_model(gw: Gateway, sim: Simulator, capture: str) -> None:
    """Codex 0.169's own turns (captured; see tests/agents), with a Claude model: every event
    the openai SDK's types accept, function and custom tools (top-level or in the
    ``additional_tools`` item) and their calls reach the Messages upstream, the model's call of
    the custom ``exec`` comes back as a ``custom_tool_call``, what chat has no place for is
    listed."""
    for turn in json.loads((CODEX / capture).read_text()):
        body = {**turn["body"], "model": "claude-haiku-4-5"}
        # The capture's prose is filler, the call's JSON arguments too: make them JSON again.
        body["input"] = [
            {**item, "arguments": json.dumps({"cmd": item["arguments"]})}
            if item.get("type") == "function_call"
            else item
            for item in body["input"]
        ]
        headers = [
            (name, value)
            for name, value in turn["headers"]
            if name.lower() not in ("host", "content-length", "authorization")
        ]
        headers.append(("authorization", f"Bearer {gw.key}"))
        with httpx.stream(
            "POST", gw.url + "/v1/responses", headers=headers, json=body, timeout=30
        ) as resp:
            raw = resp.read()
        assert resp.status_code == 200, raw[:500]
        final = sdk_events(raw)[-1]
        assert final.type == "response.completed" and final.response.usage.output_tokens > 0
        dropped = resp.headers["x-langwatch-params-dropped"].split(",")
        assert {"reasoning", "include", "prompt_cache_key", "client_metadata"} <= set(dropped)
        sent = upstream_body(sim)
        assert sim.last_request()["path"] == "/v1/messages"
        kinds = {i.get("type") for i in turn["body"]["input"]}
        names = [t["name"] for t in sent["tools"]]
        assert "input.additional_tools" not in dropped and "tools.custom" not in dropped
        output = final.response.output
        if "additional_tools" in kinds:  # the default model's tools travel there
            assert names[:2] == ["exec", "wait"] and "sleep" in names
            assert sent["tools"][0]["input_schema"]["required"] == ["input"]
        else:
            assert "exec_command" in names and "apply_patch" in names
            assert "tools.web_search" in dropped
        if kinds & {"function_call_output", "custom_tool_call_output"}:
            blocks = [
                b["type"] for m in sent["messages"] for b in m["content"] if isinstance(b, dict)
            ]
            assert "tool_use" in blocks and "tool_result" in blocks
            assert [o.type for o in output] == ["message"]
        elif "additional_tools" in kinds:  # the simulator calls the shell tool: exec
            assert (output[-1].type, output[-1].name) == ("custom_tool_call", "exec")
            assert output[-1].input == "example"
        else:
            assert (output[-1].type, output[-1].name) == ("function_call", "exec_command")


def sdk_events(raw: bytes) -> list[Any]:
    """The events as the openai SDK's own types validate them, in sequence."""
    events = [
        validate_type(type_=ResponseStreamEvent, value=sse.json())  # type: ignore[arg-type]
        for sse in SSEDecoder().iter_bytes(iter([raw]))
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def test_stored_state_skips_a_translating_provider_for_a_native_one(
    sim: Simulator, tmp_path: Path
) -> None:
    """A chain whose first provider translates: a request needing stored state goes on to the
    native provider after it instead of a 400; the others stay with the first."""
    env = plugin_site(tmp_path / "site", "tollway-test-chat-only", CHAT_ONLY)
    gateway = start_gateway(
        tmp_path / "gw",
        f"""
[[providers]]
name = "tiny"
type = "chat-only"
base_url = "{sim.url}/v1"
models = ["gpt-4o"]
priority = 0

[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{sim.url}/v1"
api_key = "sk-upstream-openai"
priority = 1
""",
        env,
    )
    try:
        client = gateway.openai()
        plain = client.responses.with_raw_response.create(model="gpt-4o", input="hi")
        assert plain.headers["x-langwatch-provider"] == "chat-only"
        follow_up = client.responses.with_raw_response.create(
            model="gpt-4o", input="and then?", previous_response_id="resp_0123"
        )
        assert follow_up.headers["x-langwatch-provider"] == "openai"
        assert follow_up.headers["x-langwatch-fallback-count"] == "0"  # a skip, not a failure
        assert sim.last_request()["path"] == "/v1/responses"
        assert upstream_body(sim)["previous_response_id"] == "resp_0123"
    finally:
        stop(gateway.proc)
