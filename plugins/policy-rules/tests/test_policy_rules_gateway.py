"""policy_rules end to end: official SDKs and real client requests → gateway → simulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tollway.testing import GatewayProcess as Gateway
from tollway.testing import (
    Simulator,
    StaticKey,
    default_providers,
    start_gateway,
    start_simulator,
    stop,
)

DATA = Path(__file__).parent / "data"
HELLO = [{"role": "user", "content": "Say hello"}]
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}

#: Only these plugins load, so other installed plugins cannot change what these tests see.
MODULES = (
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_policy_rules",
)

KEYS: dict[str, dict[str, Any]] = {
    "plain": {},
    "deny_tools": {"policy_rules": {"tools": {"deny": ["^Bash$", "^exec$"]}}},
    "allow_tools": {"policy_rules": {"tools": {"allow": ["^(Read|Write|Edit|get_weather)$"]}}},
    "mcp": {
        "policy_rules": {"mcp": {"deny": ["^untrusted-"], "allow": ["^(github|untrusted-.*)$"]}}
    },
    "urls": {"policy_rules": {"urls": {"deny": [r"(?i)://([^/]*\.)?evil\.example(/|$)"]}}},
    "url_allow": {"policy_rules": {"urls": {"allow": [r"^https://docs\.example\.com/"]}}},
    "models": {"policy_rules": {"models": {"deny": ["^gpt-4o-mini$", "^claude-opus-"]}}},
    "broken": {"policy_rules": {"tools": {"deny": ["^Bash$", "(unclosed"]}}},
    "broken_shape": {"policy_rules": {"tools": {"deny": "Bash"}}},
}


def fixture(name: str) -> list[dict[str, Any]]:
    return [r for r in json.loads((DATA / name).read_text()) if r["method"] == "POST"]


def replay(gw: Gateway, key: str, request: dict[str, Any]) -> httpx.Response:
    """Send a captured client request as the client sent it (path, query, headers, body)."""
    keep = {"anthropic-version", "anthropic-beta", "content-type", "accept"}
    headers = {k: v for k, v in request["headers"] if k.lower() in keep}
    query = "&".join(f"{k}={v}" for k, v in request["query"].items())
    path = request["path"] + (f"?{query}" if query else "")
    return gw.post(key, path, json.dumps(request["body"]).encode(), headers)


def error_of(r: httpx.Response, status: int, type_: str, code: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == (type_, code), err
    if status == 403:
        assert r.headers["x-should-retry"] == "false"
    return str(err["message"])


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(
        tmp_path_factory.mktemp("policy-gw"),
        providers=default_providers(sim.url),
        keys=[StaticKey(name=name, config=config) for name, config in KEYS.items()],
        plugins=MODULES,
    )
    yield g
    stop(g.proc)


# --- tools -------------------------------------------------------------------------------------


def test_claude_code_request_with_bash_is_refused(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    for request in fixture("claude-code-2.1.330-tool.json"):
        r = replay(gw, "deny_tools", request)
        message = error_of(r, 403, "tool_not_allowed", "tool_not_allowed")
        assert r.json()["type"] == "error"  # Anthropic clients parse the envelope
        assert '"Bash"' in message and '"^Bash$"' in message
        assert "policy_rules.tools.deny" in message
    assert sim.requests() == []  # refused before any provider saw it


def test_codex_request_with_exec_is_refused(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    for request in fixture("codex-0.169.0-responses-tool.json"):
        r = replay(gw, "deny_tools", request)
        message = error_of(r, 403, "tool_not_allowed", "tool_not_allowed")
        # Codex ships its tools in the first input item, namespaced: functions.exec.
        assert '"functions.exec"' in message and '"^exec$"' in message
    assert sim.requests() == []


def test_codex_request_without_denied_tool_passes(gw: Gateway, sim: Simulator) -> None:
    # gpt-5.5 requests carry exec_command, not exec: "^exec$" does not match it.
    for request in fixture("codex-0.169.0-responses-tool-gpt-5.5.json"):
        sim.clear()
        r = replay(gw, "deny_tools", request)
        assert r.status_code == 200, r.text
        assert "response.completed" in r.text
        assert json.loads(sim.last_body()) == request["body"]


def test_chat_sdk_tool_denied(gw: Gateway) -> None:
    tools: Any = [{"type": "function", "function": {"name": "Bash", "parameters": SCHEMA}}]
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("deny_tools").chat.completions.create(model="gpt-4o", messages=HELLO, tools=tools)
    err = info.value.response.json()["error"]
    assert err["type"] == "tool_not_allowed" and '"Bash"' in err["message"]


def test_chat_history_cannot_smuggle_a_denied_tool(gw: Gateway) -> None:
    messages: Any = [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a b c"},
    ]
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("deny_tools").chat.completions.create(model="gpt-4o", messages=messages)
    assert '"Bash"' in info.value.response.json()["error"]["message"]


def test_messages_sdk_tool_denied(gw: Gateway) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        gw.anthropic("deny_tools").messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=HELLO,  # type: ignore[arg-type]
            tools=[{"name": "Bash", "input_schema": SCHEMA}],  # type: ignore[list-item]
        )
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "tool_not_allowed"


def test_responses_sdk_custom_tool_denied(gw: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("deny_tools").responses.create(
            model="gpt-4o",
            input="run it",
            tools=[{"type": "custom", "name": "exec"}],  # type: ignore[list-item]
        )
    assert '"exec"' in info.value.response.json()["error"]["message"]


def test_allowed_tool_passes_and_body_is_forwarded_untouched(gw: Gateway, sim: Simulator) -> None:
    body = (
        b'{"model":"gpt-4o",  "messages":[{"role":"user","content":"weather?"}],'
        b'"tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}}]}'
    )
    for key in ("allow_tools", "deny_tools", "plain"):
        sim.clear()
        r = gw.post(key, "/v1/chat/completions", body)
        assert r.status_code == 200, r.text
        assert sim.last_body() == body


def test_allow_list_refuses_tools_outside_it(gw: Gateway) -> None:
    r = replay(gw, "allow_tools", fixture("claude-code-2.1.330-tool.json")[0])
    message = error_of(r, 403, "tool_not_allowed", "tool_not_allowed")
    assert '"Agent"' in message and "policy_rules.tools.allow" in message
    assert "not in the allow list" in message


def test_key_without_rules_is_not_judged(gw: Gateway) -> None:
    r = replay(gw, "plain", fixture("claude-code-2.1.330-tool.json")[0])
    assert r.status_code == 200, r.text


# --- MCP -----------------------------------------------------------------------------------------


def test_mcp_server_denied_on_responses(gw: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("mcp").responses.create(
            model="gpt-4o",
            input="hi",
            tools=[
                {
                    "type": "mcp",
                    "server_label": "untrusted-fs",
                    "server_url": "https://mcp.example/sse",
                    "require_approval": "never",
                }
            ],
        )
    err = info.value.response.json()["error"]
    assert (err["type"], err["code"]) == ("tool_not_allowed", "mcp_not_allowed")
    assert '"untrusted-fs"' in err["message"] and "policy_rules.mcp.deny" in err["message"]


def test_mcp_servers_allow_list(gw: Gateway, sim: Simulator) -> None:
    client = gw.openai("mcp")
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=HELLO, extra_body={"mcp_servers": [{"name": "jira"}]}
        )
    message = info.value.response.json()["error"]["message"]
    assert '"jira"' in message and "policy_rules.mcp.allow" in message
    sim.clear()
    client.chat.completions.create(
        model="gpt-4o", messages=HELLO, extra_body={"mcp_servers": [{"name": "github"}]}
    )
    assert json.loads(sim.last_body())["mcp_servers"] == [{"name": "github"}]


# --- URLs ----------------------------------------------------------------------------------------

EVIL = "https://www.evil.example/steal?x=1"


def _url_call(gw: Gateway, key: str, route: str, text: str) -> None:
    if route == "chat":
        gw.openai(key).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": text}]
        )
    elif route == "messages":
        gw.anthropic(key).messages.create(
            model="claude-haiku-4-5",
            max_tokens=32,
            messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
        )
    elif route == "responses":
        gw.openai(key).responses.create(model="gpt-4o", input=text)
    else:
        gw.openai(key).embeddings.create(model="text-embedding-3-small", input=[text])


@pytest.mark.parametrize("route", ["chat", "messages", "responses", "embeddings"])
def test_url_denied_on_every_route(gw: Gateway, route: str) -> None:
    error = anthropic.PermissionDeniedError if route == "messages" else openai.PermissionDeniedError
    with pytest.raises(error) as info:
        _url_call(gw, "urls", route, f"please read {EVIL}. thanks")
    err = info.value.response.json()["error"]
    assert (err["type"], err["code"]) == ("tool_not_allowed", "url_not_allowed")
    assert f'"{EVIL}"' in err["message"] and "policy_rules.urls.deny" in err["message"]
    _url_call(gw, "urls", route, "please read https://good.example/evil.example.txt")


def test_url_in_nested_content_is_found(gw: Gateway) -> None:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 16,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://evil.example/a.png"},
                    }
                ],
            }
        ],
    }
    r = gw.post("urls", "/v1/messages", body, {"anthropic-version": "2023-06-01"})
    assert '"https://evil.example/a.png"' in error_of(r, 403, "tool_not_allowed", "url_not_allowed")


def test_url_allow_list(gw: Gateway) -> None:
    text = "see https://docs.example.com/a and https://other.example/b"
    with pytest.raises(openai.PermissionDeniedError) as info:
        _url_call(gw, "url_allow", "chat", text)
    message = info.value.response.json()["error"]["message"]
    assert '"https://other.example/b"' in message and "policy_rules.urls.allow" in message
    _url_call(gw, "url_allow", "chat", "only https://docs.example.com/guide here")
    _url_call(gw, "url_allow", "chat", "no links at all")


# --- models --------------------------------------------------------------------------------------


def test_models_dimension(gw: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("models").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    err = info.value.response.json()["error"]
    assert (err["type"], err["code"]) == ("model_not_allowed", "policy_rules")
    assert '"gpt-4o-mini"' in err["message"] and "policy_rules.models.deny" in err["message"]
    with pytest.raises(anthropic.PermissionDeniedError):
        gw.anthropic("models").messages.create(
            model="claude-opus-4-1",
            max_tokens=16,
            messages=HELLO,  # type: ignore[arg-type]
        )
    gw.openai("models").chat.completions.create(model="gpt-4o", messages=HELLO)


def test_models_list_is_filtered(gw: Gateway) -> None:
    everything = [m.id for m in gw.openai("plain").models.list()]
    assert {"gpt-4o-mini", "claude-opus-4-1", "gpt-4o"} <= set(everything)
    listed = [m.id for m in gw.openai("models").models.list()]
    assert listed == [
        m for m in everything if m != "gpt-4o-mini" and not m.startswith("claude-opus-")
    ]
    with pytest.raises(openai.InternalServerError):
        gw.openai("broken").models.list()


# --- a policy that does not compile --------------------------------------------------------------


def _log_messages(gw: Gateway, prefix: str) -> list[dict[str, Any]]:
    return [line for line in gw.log_records() if str(line.get("msg", "")).startswith(prefix)]


def _broken_lines(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    return [
        line
        for line in _log_messages(gw, kind)
        if line.get("pattern") == "(unclosed" and line.get("path") == "policy_rules.tools.deny[1]"
    ]


def test_broken_pattern_fails_closed(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    before = len(_broken_lines(gw, "policy_rules_broken"))
    for _ in range(3):
        r = gw.post("broken", "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO})
        message = error_of(r, 503, "service_unavailable", "policy_rules_broken")
        assert '"(unclosed"' in message and "policy_rules.tools.deny[1]" in message
        assert r.headers["x-langwatch-retry-after"] == "300"
        assert "retry-after" not in r.headers
        assert r.headers["x-should-retry"] == "false"
    with pytest.raises(openai.InternalServerError):
        gw.openai("broken").chat.completions.create(model="gpt-4o", messages=HELLO)
    assert sim.requests() == []
    deadline = time.monotonic() + 5
    while len(_broken_lines(gw, "policy_rules_broken")) < before + 4:
        assert time.monotonic() < deadline, gw.logs()
        time.sleep(0.05)
    compiled = _broken_lines(gw, "policy_rules_compile_failed")
    assert len(compiled) == 1  # once per distinct policy, not per request
    assert compiled[0]["level"] == "warning" and compiled[0]["logger"] == "tollway.policy_rules"
    assert 'dimension=tools pattern="(unclosed"' in compiled[0]["msg"]
    assert compiled[0]["dimension"] == "tools"
    broken = _broken_lines(gw, "policy_rules_broken")
    assert len(broken) == before + 4
    assert all(line["level"] == "warning" for line in broken)
    assert all(line.get("request_id", "").startswith("grq_") for line in broken)


def test_broken_shape_fails_closed(gw: Gateway) -> None:
    r = gw.post("broken_shape", "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO})
    message = error_of(r, 503, "service_unavailable", "policy_rules_broken")
    assert "policy_rules.tools.deny: must be a list" in message
