"""Real coding-agent requests (Claude Code 2.1.330, Codex CLI 0.169.0) replayed through a real
gateway to the provider simulator, with the headers the CLIs send.

For every captured request: accepted, body and query forwarded byte-for-byte, the client's
headers passed on, the stream relayed with an ``event:`` line on every event (and Responses'
``sequence_number``), usage accounted in the ``request_completed`` log line. A tool denied by
``policy_rules`` is refused wherever the tool travels. Codex's WebSocket attempt on
``GET /v1/responses`` is refused with 426 so that Codex falls back to ``POST`` at once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from agents_harness import (
    FIXTURES,
    body_bytes,
    client_headers,
    load,
    posts,
    request_completed,
    send,
    sse_events,
)

from tollway.testing import (
    GatewayProcess,
    Simulator,
    StaticKey,
    default_providers,
    start_gateway,
    start_simulator,
    stop,
)

#: Only what these tests exercise, so other plugins cannot change what they see.
PLUGINS = (
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_policy_rules",
    "tollway_telemetry",
)
DENY = ["^Bash$", "^exec$", "^exec_command$"]
#: Headers the gateway consumes or replaces: never forwarded as the client sent them.
NOT_FORWARDED = {"authorization", "x-api-key", "connection", "accept-encoding", "host"}

POSTS = list(posts())
POST_IDS = [f"{name.removesuffix('.json')}#{i}" for name, i, _ in POSTS]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    g: GatewayProcess = start_gateway(
        tmp_path_factory.mktemp("agents-gw"),
        providers=default_providers(sim.url),
        keys=[
            StaticKey(name="agent"),
            StaticKey(name="deny", config={"policy_rules": {"tools": {"deny": DENY}}}),
        ],
        plugins=PLUGINS,
    )
    yield g
    stop(g.proc)


def _codex_builtin(name: str) -> bool:
    """Codex's built-in provider without CODEX_API_KEY: the capture has no Authorization."""
    return "openai-base-url" in name


def test_every_capture_is_replayed() -> None:
    assert FIXTURES == [
        "claude-code-2.1.330-authtoken-haiku.json",
        "claude-code-2.1.330-tool.json",
        "codex-0.169.0-openai-base-url-tool.json",
        "codex-0.169.0-responses-tool-gpt-5.5.json",
        "codex-0.169.0-responses-tool.json",
    ]
    assert len(POSTS) == 9


@pytest.mark.parametrize(("name", "index", "request_"), POSTS, ids=POST_IDS)
def test_capture_relayed_unchanged_and_accounted(
    gw: GatewayProcess, sim: Simulator, name: str, index: int, request_: dict[str, Any]
) -> None:
    sim.clear()
    key = gw.secret("agent")
    response, raw = send(gw.url, request_, key, add_key=_codex_builtin(name))
    assert response.status_code == 200, raw[:2000]
    assert response.headers["content-type"].startswith("text/event-stream")

    # Forwarded: the exact bytes, the path with its query string, the client's own headers.
    (upstream,) = sim.requests()
    assert base64.b64decode(upstream["body"]) == body_bytes(request_)
    assert upstream["path"] == request_["path"]
    assert upstream["query_string"] == "&".join(f"{k}={v}" for k, v in request_["query"].items())
    received = {k.lower(): v for k, v in upstream["headers"]}
    for header, value in client_headers(request_, key):
        if header.lower() not in NOT_FORWARDED:
            assert received.get(header.lower()) == value, header
    assert key not in json.dumps(upstream["headers"])  # the virtual key never goes upstream

    # Relayed: an event: line on every event, naming the data's type.
    events = sse_events(raw)
    assert events and all(name_ == data["type"] for name_, data in events)
    anthropic = request_["path"] == "/v1/messages"
    if anthropic:
        assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
        assert "ping" in [n for n, _ in events]
        usage = events[-2][1]["usage"]  # message_delta
        expected_in, expected_out = usage["input_tokens"], usage["output_tokens"]
    else:
        assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
        assert events[-1][0] == "response.completed"
        usage = events[-1][1]["response"]["usage"]
        assert "cached_tokens" in usage["input_tokens_details"]
        assert "reasoning_tokens" in usage["output_tokens_details"]
        expected_in = usage["input_tokens"] - usage["input_tokens_details"]["cached_tokens"]
        expected_out = usage["output_tokens"]

    # Accounted: the routing headers and the telemetry line carry the usage.
    assert response.headers["x-langwatch-provider"] == ("anthropic" if anthropic else "openai")
    assert response.headers["x-langwatch-model"] == request_["body"]["model"]
    line = request_completed(gw, response.headers["x-langwatch-request-id"])
    assert line["status"] == "200"
    assert line["endpoint"] == ("messages" if anthropic else "responses")
    assert (int(line["input_tokens"]), int(line["output_tokens"])) == (expected_in, expected_out)
    assert expected_in > 0 and expected_out > 0


def _carries_tool_result(request: dict[str, Any]) -> bool:
    """Whether the request carries a tool result as its last turn."""
    body = request["body"]
    if request["path"] == "/v1/messages":
        last = [m for m in body["messages"] if m["role"] == "user"][-1]
        return isinstance(last["content"], list) and any(
            b.get("type") == "tool_result" for b in last["content"]
        )
    return body["input"][-1].get("type") in ("function_call_output", "custom_tool_call_output")


@pytest.mark.parametrize(("name", "index", "request_"), POSTS, ids=POST_IDS)
def test_tool_turns_round_trip(
    gw: GatewayProcess, name: str, index: int, request_: dict[str, Any]
) -> None:
    """A first turn gets a tool call back (the CLI's shell tool), a tool-result turn text."""
    _, raw = send(gw.url, request_, gw.secret("agent"), add_key=_codex_builtin(name))
    events = sse_events(raw)
    if request_["path"] == "/v1/messages":
        kinds = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
        stop_reason = events[-2][1]["delta"]["stop_reason"]
        if _carries_tool_result(request_):
            assert (kinds, stop_reason) == (["text"], "end_turn")
        else:
            assert (kinds, stop_reason) == (["text", "tool_use"], "tool_use")
            tool = [d for n, d in events if n == "content_block_start"][-1]["content_block"]
            assert tool["name"] == "Bash"
    else:
        done = [d["item"] for n, d in events if n == "response.output_item.done"]
        if _carries_tool_result(request_):
            assert done[-1]["type"] == "message"
        elif "gpt-5.5" in name:
            assert (done[-1]["type"], done[-1]["name"]) == ("function_call", "exec_command")
            assert json.loads(done[-1]["arguments"]) == {"cmd": "echo ok"}
        else:
            assert (done[-1]["type"], done[-1]["name"]) == ("custom_tool_call", "exec")


# --- tool policy: wherever the tool travels -------------------------------------------------

#: (capture, where the tool travels, the name the refusal quotes, the pattern it quotes)
DENIALS = [
    ("claude-code-2.1.330-tool", "top-level", '"Bash"', '"^Bash$"'),
    ("claude-code-2.1.330-authtoken-haiku", "top-level", '"Bash"', '"^Bash$"'),
    ("codex-0.169.0-responses-tool", "additional_tools", '"functions.exec"', '"^exec$"'),
    ("codex-0.169.0-openai-base-url-tool", "additional_tools", '"functions.exec"', '"^exec$"'),
    ("codex-0.169.0-responses-tool-gpt-5.5", "top-level", '"exec_command"', '"^exec_command$"'),
]


@pytest.mark.parametrize(("name", "where", "tool", "pattern"), DENIALS, ids=[d[0] for d in DENIALS])
def test_denied_tool_refused(
    gw: GatewayProcess, sim: Simulator, name: str, where: str, tool: str, pattern: str
) -> None:
    sim.clear()
    for request in load(f"{name}.json"):
        if request["method"] != "POST":
            continue
        response, raw = send(gw.url, request, gw.secret("deny"), add_key=_codex_builtin(name))
        assert response.status_code == 403, (where, raw[:500])
        body = json.loads(raw)
        err = body["error"]
        assert (err["type"], err["code"]) == ("tool_not_allowed", "tool_not_allowed")
        assert tool in err["message"] and pattern in err["message"], err["message"]
        assert "policy_rules.tools.deny" in err["message"]
        assert response.headers["x-should-retry"] == "false"
        if request["path"] == "/v1/messages":
            assert body["type"] == "error"  # Anthropic clients parse the envelope
        line = request_completed(gw, response.headers["x-langwatch-request-id"])
        assert (line["status"], line["error_type"]) == ("403", "tool_not_allowed")
    assert sim.requests() == []  # refused before any provider saw it


def test_codex_builtin_provider_without_codex_api_key_is_401(gw: GatewayProcess) -> None:
    """Without CODEX_API_KEY Codex's built-in provider sends no key at all."""
    request = next(r for r in load("codex-0.169.0-openai-base-url-tool.json") if r["body"])
    response, raw = send(gw.url, request, gw.secret("agent"))
    assert response.status_code == 401
    assert json.loads(raw)["error"]["type"] == "invalid_api_key"


# --- Codex's WebSocket attempt ---------------------------------------------------------------


def _assert_websocket_refused(response: httpx.Response, raw: bytes) -> None:
    assert response.status_code == 426, raw
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-langwatch-request-id"].startswith("grq_")
    body = json.loads(raw)
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"type", "code", "message", "param"}
    assert (err["type"], err["code"], err["param"]) == (
        "websocket_not_supported",
        "websocket_not_supported",
        None,
    )
    assert "POST /v1/responses" in err["message"] and "model_providers" in err["message"]


def test_codex_websocket_upgrade_refused_with_426(gw: GatewayProcess, sim: Simulator) -> None:
    """Codex 0.169 answered 426 on its WebSocket upgrade falls back to POST on the first try
    (404/405/5xx: five reconnects first; 400: the run fails) — docs/codex.md."""
    sim.clear()
    gets = [r for r in load("codex-0.169.0-openai-base-url-tool.json") if r["method"] == "GET"]
    assert len(gets) == 7  # what a 404 costs
    for request in gets:
        assert ("Upgrade", "websocket") in [tuple(h) for h in request["headers"]]
        response, raw = send(gw.url, request, gw.secret("agent"))  # the capture: no key
        _assert_websocket_refused(response, raw)
    assert sim.requests() == []


def test_websocket_upgrade_behind_a_proxy_that_drops_upgrade(gw: GatewayProcess) -> None:
    """``Upgrade`` is hop-by-hop (a proxy may drop it); ``Sec-WebSocket-Key`` still marks it."""
    r = httpx.get(
        f"{gw.url}/v1/responses",
        headers={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"},
    )
    _assert_websocket_refused(r, r.content)


def test_plain_get_on_responses_is_still_405(gw: GatewayProcess) -> None:
    r = httpx.get(f"{gw.url}/v1/responses")
    assert r.status_code == 405
    assert r.json()["error"]["type"] == "method_not_allowed"
