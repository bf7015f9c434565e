"""Candidate extraction: every place a tool, an MCP server or a URL can travel (property-based)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway_policy_rules import (
    UNNAMED_MCP_SERVER,
    compile_rules,
    extract,
    mcp_candidates,
    tool_candidates,
    url_candidates,
)

DATA = Path(__file__).parent / "data"


def bodies(name: str) -> list[dict[str, Any]]:
    return [r["body"] for r in json.loads((DATA / name).read_text()) if r["method"] == "POST"]


# --- the real clients ----------------------------------------------------------------------------


def test_claude_code_tools() -> None:
    for body in bodies("claude-code-2.1.330-tool.json"):
        names = [forms[0] for forms in tool_candidates(body)]
        assert names[:3] == ["Agent", "Bash", "Edit"] and "Write" in names
        assert len(names) == 12  # the tool_use of Bash in the history is the same Bash
        assert mcp_candidates(body) == []


def test_codex_tools_travel_in_the_first_input_item() -> None:
    first, second = bodies("codex-0.169.0-responses-tool.json")
    assert "tools" not in first
    tools = tool_candidates(first)
    assert ("functions.exec", "exec") in tools
    assert ("collaboration.spawn_agent", "spawn_agent") in tools
    assert len(tools) == 11
    # The second turn's custom_tool_call "exec" is the namespaced tool, judged once.
    assert tool_candidates(second) == tools


def test_codex_top_level_tools_of_every_type() -> None:
    body = bodies("codex-0.169.0-responses-tool-gpt-5.5.json")[1]
    names = [forms[0] for forms in tool_candidates(body)]
    assert names == [
        "exec_command",
        "write_stdin",
        "request_user_input",
        "apply_patch",  # custom
        "view_image",
        "get_goal",
        "create_goal",
        "update_goal",
        "tool_search",  # hosted: judged by type
        "web_search",
    ]


def test_only_the_dimensions_asked_for_are_walked() -> None:
    body = {
        "tools": [{"name": "a"}],
        "messages": [{"role": "user", "content": "https://x.example"}],
    }
    found = extract(body, tools=True, mcp=False, urls=False)
    assert found.tools == [("a",)] and found.mcp is None and found.urls is None
    found = extract(body, tools=False, mcp=False, urls=True)
    assert found.tools is None and found.urls == ["https://x.example"]


def test_tools_only_policy_never_walks_for_urls(monkeypatch: Any) -> None:
    import tollway_policy_rules._extract as extract_module

    def boom(body: Any) -> list[str]:
        raise AssertionError("walked the body for URLs")

    monkeypatch.setattr(extract_module, "url_candidates", boom)
    rules = compile_rules({"tools": {"deny": ["^Bash$"]}, "models": {"deny": ["^x$"]}})
    assert rules.evaluate({"messages": [{"content": "https://a.example"}]}, "gpt-4o") is None


# --- tools: every placement ----------------------------------------------------------------------

NAME = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=12
)

Placement = Callable[[str], dict[str, Any]]

PLACEMENTS: dict[str, Placement] = {
    "chat tools": lambda n: {"tools": [{"type": "function", "function": {"name": n}}]},
    "chat custom tool": lambda n: {"tools": [{"type": "custom", "custom": {"name": n}}]},
    "anthropic tools": lambda n: {"tools": [{"name": n, "input_schema": {"type": "object"}}]},
    "anthropic server tool": lambda n: {"tools": [{"type": "web_search_20250305", "name": n}]},
    "responses function": lambda n: {"tools": [{"type": "function", "name": n}]},
    "responses custom": lambda n: {"tools": [{"type": "custom", "name": n}]},
    "responses hosted": lambda n: {"tools": [{"type": n}]},
    "namespace": lambda n: {
        "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": n}]}]
    },
    "additional_tools": lambda n: {
        "input": [{"type": "additional_tools", "tools": [{"type": "custom", "name": n}]}]
    },
    "additional_tools namespace": lambda n: {
        "input": [
            {
                "type": "additional_tools",
                "role": "developer",
                "tools": [
                    {
                        "type": "namespace",
                        "name": "functions",
                        "tools": [{"type": "custom", "name": n}],
                    }
                ],
            }
        ]
    },
    "legacy functions": lambda n: {"functions": [{"name": n, "parameters": {}}]},
    "legacy function_call": lambda n: {"function_call": {"name": n}},
    "chat tool_choice": lambda n: {"tool_choice": {"type": "function", "function": {"name": n}}},
    "responses tool_choice": lambda n: {"tool_choice": {"type": "function", "name": n}},
    "anthropic tool_choice": lambda n: {"tool_choice": {"type": "tool", "name": n}},
    "hosted tool_choice": lambda n: {"tool_choice": {"type": n}} if n not in _MODES else {},
    "allowed_tools choice": lambda n: {
        "tool_choice": {
            "type": "allowed_tools",
            "mode": "auto",
            "tools": [{"type": "function", "name": n}],
        }
    },
    "chat allowed_tools choice": lambda n: {
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "auto",
                "tools": [{"type": "function", "function": {"name": n}}],
            },
        }
    },
    "chat history tool_calls": lambda n: {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": n, "arguments": "{}"}}
                ],
            }
        ]
    },
    "chat history function_call": lambda n: {
        "messages": [{"role": "assistant", "function_call": {"name": n, "arguments": "{}"}}]
    },
    "chat function message": lambda n: {
        "messages": [{"role": "function", "name": n, "content": "x"}]
    },
    "anthropic tool_use": lambda n: {
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": n, "input": {}}],
            }
        ]
    },
    "anthropic server_tool_use": lambda n: {
        "messages": [
            {"role": "assistant", "content": [{"type": "server_tool_use", "id": "t", "name": n}]}
        ]
    },
    "responses function_call": lambda n: {
        "input": [{"type": "function_call", "call_id": "c", "name": n, "arguments": "{}"}]
    },
    "responses custom_tool_call": lambda n: {
        "input": [{"type": "custom_tool_call", "call_id": "c", "name": n, "input": "x"}]
    },
}
_MODES = {"auto", "none", "required", "any", "tool", "function", "custom", "allowed_tools", "mcp"}


def _noise(names: list[str]) -> dict[str, Any]:
    """A realistic body that uses only ``names`` as tools, in several shapes at once."""
    return {
        "model": "gpt-4o",
        "tools": [{"type": "function", "function": {"name": n}} for n in names[:2]]
        + [{"name": n, "input_schema": {}} for n in names[2:3]],
        "messages": [
            {"role": "user", "content": "hello"},
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": n}} for n in names[:1]],
                "content": [{"type": "tool_use", "name": n} for n in names[1:2]],
            },
        ],
        "input": [
            {
                "type": "additional_tools",
                "tools": [
                    {
                        "type": "namespace",
                        "name": "functions",
                        "tools": [{"type": "custom", "name": n} for n in names[3:]],
                    }
                ],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
        "tool_choice": "auto",
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out


@settings(max_examples=150, deadline=None)
@given(
    denied=NAME,
    others=st.lists(NAME, max_size=6),
    where=st.lists(st.sampled_from(sorted(PLACEMENTS)), min_size=1, max_size=3),
)
def test_a_denied_tool_is_refused_wherever_it_travels(
    denied: str, others: list[str], where: list[str]
) -> None:
    others = [o for o in others if o != denied]
    if denied in _MODES and all(w == "hosted tool_choice" for w in where):
        where = ["chat tools"]
    rules = compile_rules({"tools": {"deny": [f"^{re2.escape(denied)}$"]}})
    body = _noise(others)
    for w in where:
        body = _merge(body, PLACEMENTS[w](denied))
    refusal = rules.evaluate(body, "gpt-4o")
    assert refusal is not None, (where, body)
    assert refusal.dimension == "tools" and refusal.list == "deny"
    assert denied in refusal.forms


@settings(max_examples=150, deadline=None)
@given(
    denied=NAME,
    others=st.lists(NAME, max_size=6),
    placed=st.lists(st.tuples(NAME, st.sampled_from(sorted(PLACEMENTS))), max_size=4),
)
def test_a_body_without_the_denied_tool_is_never_refused(
    denied: str, others: list[str], placed: list[tuple[str, str]]
) -> None:
    others = [o for o in others if o != denied]
    rules = compile_rules({"tools": {"deny": [f"^{re2.escape(denied)}$"]}})
    body = _noise(others)
    for name, where in placed:
        if name != denied:
            body = _merge(body, PLACEMENTS[where](name))
    assert rules.evaluate(body, "gpt-4o") is None, body


@settings(max_examples=100, deadline=None)
@given(
    allowed=st.lists(NAME, min_size=1, max_size=5),
    intruder=NAME,
    where=st.sampled_from(sorted(PLACEMENTS)),
)
def test_allow_list_admits_exactly_its_tools(allowed: list[str], intruder: str, where: str) -> None:
    if intruder in allowed or intruder in _MODES:
        return
    pattern = "^(" + "|".join(re2.escape(a) for a in allowed) + ")$"
    rules = compile_rules({"tools": {"allow": [pattern]}})
    assert rules.evaluate(_noise(allowed), "m") is None
    refusal = rules.evaluate(_merge(_noise(allowed), PLACEMENTS[where](intruder)), "m")
    assert refusal is not None and refusal.list == "allow" and intruder in refusal.forms


def test_namespaced_tool_is_judged_as_both_forms() -> None:
    body = PLACEMENTS["additional_tools namespace"]("exec")
    assert tool_candidates(body) == [("functions.exec", "exec")]
    deny_bare = compile_rules({"tools": {"deny": ["^exec$"]}})
    deny_full = compile_rules({"tools": {"deny": [r"^functions\.exec$"]}})
    allow_ns = compile_rules({"tools": {"allow": [r"^functions\."]}})
    allow_bare = compile_rules({"tools": {"allow": ["^exec$"]}})
    assert deny_bare.evaluate(body, "m") is not None
    assert deny_full.evaluate(body, "m") is not None
    assert allow_ns.evaluate(body, "m") is None
    assert allow_bare.evaluate(body, "m") is None


# --- MCP -----------------------------------------------------------------------------------------

MCP_PLACEMENTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "mcp list name": lambda n: {"mcp": [{"name": n, "url": "https://x"}]},
    "mcps list id": lambda n: {"mcps": [{"id": n}]},
    "mcp_servers anthropic": lambda n: {
        "mcp_servers": [{"type": "url", "url": "https://m", "name": n}]
    },
    "mcp_servers label": lambda n: {"mcp_servers": [{"server_label": n}]},
    "mcp_servers url": lambda n: {"mcp_servers": [{"url": n}]},
    "mcp_servers strings": lambda n: {"mcp_servers": [n]},
    "mcp mapping": lambda n: {"mcp": {n: {"command": "x"}}},
    "responses mcp tool": lambda n: {
        "tools": [{"type": "mcp", "server_label": n, "server_url": "https://m"}]
    },
    "anthropic mcp_toolset": lambda n: {"tools": [{"type": "mcp_toolset", "mcp_server_name": n}]},
    "mcp tool_choice": lambda n: {"tool_choice": {"type": "mcp", "server_label": n}},
    "mcp_call item": lambda n: {"input": [{"type": "mcp_call", "server_label": n, "name": "t"}]},
    "mcp_list_tools item": lambda n: {
        "input": [{"type": "mcp_list_tools", "server_label": n, "tools": []}]
    },
    "anthropic mcp_tool_use": lambda n: {
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "mcp_tool_use", "server_name": n, "name": "t"}],
            }
        ]
    },
}


@settings(max_examples=100, deadline=None)
@given(server=NAME, where=st.sampled_from(sorted(MCP_PLACEMENTS)))
def test_a_denied_mcp_server_is_refused_wherever_it_travels(server: str, where: str) -> None:
    body = _merge(_noise(["a", "b"]), MCP_PLACEMENTS[where](server))
    assert server in mcp_candidates(body)
    rules = compile_rules({"mcp": {"deny": [f"^{re2.escape(server)}$"]}})
    refusal = rules.evaluate(body, "m")
    assert refusal is not None and refusal.dimension == "mcp" and refusal.value == server


def test_mcp_entry_field_precedence_and_unnamed() -> None:
    body = {
        "mcp_servers": [
            {"url": "u", "server_label": "l", "id": "i", "name": "n"},
            {"id": "i2", "url": "u2"},
            {},
        ]
    }
    assert mcp_candidates(body) == ["n", "i2", UNNAMED_MCP_SERVER]
    allow = compile_rules({"mcp": {"allow": ["^(n|i2)$"]}})
    refusal = allow.evaluate(body, "m")
    assert refusal is not None and refusal.value == UNNAMED_MCP_SERVER


# --- URLs ----------------------------------------------------------------------------------------

HOST = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,8}){1,3}", fullmatch=True)
PATH = st.from_regex(r"(/[A-Za-z0-9_~%=&?.-]{0,10}){0,3}", fullmatch=True)
WORDS = st.text("abc xyz,;:\n\t", max_size=20)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTPS", "Http"]))
    path = draw(PATH).rstrip(".,;:!?")
    return f"{scheme}://{draw(HOST)}{path}"


def _place(value: str, shape: int) -> Any:
    return [
        value,
        {"messages": [{"role": "user", "content": value}]},
        {"input": [{"type": "message", "content": [{"type": "input_text", "text": value}]}]},
        {"a": {"b": [{"c": [value]}]}},
        {value: 1},
    ][shape]


@settings(max_examples=200, deadline=None)
@given(url=urls(), before=WORDS, after=WORDS, shape=st.integers(0, 4))
def test_every_url_is_found(url: str, before: str, after: str, shape: int) -> None:
    text = f"{before} {url} {after}"
    assert url in url_candidates(_place(text, shape))


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=60), shape=st.integers(0, 4))
def test_no_url_without_a_scheme(text: str, shape: int) -> None:
    if "://" in text:
        return
    assert url_candidates(_place(text, shape)) == []


def test_url_trimming_and_dedup() -> None:
    text = (
        "See https://a.example/x. Also (https://b.example/y) and "
        "https://en.wikipedia.org/wiki/Foo_(bar), again https://a.example/x! and "
        "xhttps://c.example and http:// alone"
    )
    assert url_candidates({"t": text, "u": ["https://a.example/x"]}) == [
        "https://a.example/x",
        "https://b.example/y",
        "https://en.wikipedia.org/wiki/Foo_(bar)",
        "https://c.example",
    ]


def test_deeply_nested_body_does_not_recurse() -> None:
    body: Any = "https://deep.example/"
    for _ in range(5000):
        body = [body]
    assert url_candidates({"x": body}) == ["https://deep.example/"]
