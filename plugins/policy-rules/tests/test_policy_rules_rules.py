"""Compiling, validating and judging policy_rules (pure functions and the hook, in process)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import tollway_policy_rules as pr
from tollway import (
    ModelNotAllowed,
    Principal,
    RequestContext,
    ServiceUnavailable,
    Stash,
    ToolNotAllowed,
)


def ctx_for(config: dict[str, Any], body: dict[str, Any] | None = None, gateway: Any = None) -> Any:
    body = body if body is not None else {"model": "gpt-4o", "messages": []}
    ctx = RequestContext(
        request_id="grq_test",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 32,
        span_id="0" * 16,
        gateway=gateway,
    )
    ctx.body = body
    ctx.model = body["model"]
    ctx.principal = Principal(key_id="vk_1", display_prefix="lw_vk_test_01", config=config)
    return ctx


class FakeGateway:
    def __init__(self) -> None:
        self.stash = Stash()


# --- validate_policy_rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,errors",
    [
        ({}, []),
        ({"policy_rules": None}, []),
        ({"policy_rules": {"tools": {"deny": ["^Bash$"], "allow": None}}}, []),
        ({"policy_rules": {"tools": None, "mcp": {}}}, []),
        (
            {"policy_rules": {"tools": {"deny": ["^ok$", "(a"]}}},
            ['policy_rules.tools.deny[1]: pattern "(a" is not valid RE2 (missing ): (a)'],
        ),
        (
            {"policy_rules": {"urls": {"allow": [r"(a)\1"]}}},
            [r'policy_rules.urls.allow[0]: pattern "(a)\\1" is not valid RE2'],
        ),
        (
            {"policy_rules": {"models": {"deny": ["(?=x)"]}}},
            ['policy_rules.models.deny[0]: pattern "(?=x)" is not valid RE2'],
        ),
        (
            {"policy_rules": {"tools": {"deny": "Bash"}}},
            ["policy_rules.tools.deny: must be a list of RE2 patterns or null, not a string"],
        ),
        (
            {"policy_rules": {"tools": {"deny": [1]}}},
            ["policy_rules.tools.deny[0]: must be a string (an RE2 pattern), not an integer"],
        ),
        (
            {"policy_rules": {"tool": {"deny": []}}},
            ["policy_rules.tool: unknown dimension"],
        ),
        (
            {"policy_rules": {"tools": {"block": []}}},
            ["policy_rules.tools.block: unknown list"],
        ),
        (
            {"policy_rules": {"tools": ["x"]}},
            ["policy_rules.tools: must be an object with deny and/or allow lists, not an array"],
        ),
        ({"policy_rules": "x"}, ["policy_rules: must be an object"]),
    ],
)
def test_validate_policy_rules(config: dict[str, Any], errors: list[str]) -> None:
    found = pr.validate_policy_rules(config)
    assert len(found) == len(errors), found
    for got, want in zip(found, errors, strict=True):
        assert got.startswith(want), got


def test_validate_reports_every_problem() -> None:
    config = {"policy_rules": {"tools": {"deny": ["(", "["]}, "urls": {"allow": ["*"]}}}
    assert [e.split(":")[0] for e in pr.validate_policy_rules(config)] == [
        "policy_rules.tools.deny[0]",
        "policy_rules.tools.deny[1]",
        "policy_rules.urls.allow[0]",
    ]


# --- semantics -----------------------------------------------------------------------------------


def test_search_semantics() -> None:
    rules = pr.compile_rules({"tools": {"deny": ["exec"]}})
    for name in ("exec", "exec_command", "functions.exec", "my_exec_tool"):
        assert rules.evaluate({"tools": [{"name": name}]}, "m") is not None, name
    assert rules.evaluate({"tools": [{"name": "Exec"}]}, "m") is None  # case-sensitive
    anchored = pr.compile_rules({"tools": {"deny": ["^exec$"]}})
    assert anchored.evaluate({"tools": [{"name": "exec_command"}]}, "m") is None


def test_deny_wins_over_allow_and_names_the_first_pattern() -> None:
    rules = pr.compile_rules({"tools": {"deny": ["zzz", "^Ba", "sh$"], "allow": ["Bash"]}})
    refusal = rules.evaluate({"tools": [{"name": "Bash"}]}, "m")
    assert refusal is not None and (refusal.list, refusal.pattern) == ("deny", "^Ba")


def test_deny_is_reported_before_an_allow_miss() -> None:
    rules = pr.compile_rules({"tools": {"deny": ["^Bash$"], "allow": ["^Read$"]}})
    refusal = rules.evaluate({"tools": [{"name": "Write"}, {"name": "Bash"}]}, "m")
    assert refusal is not None and refusal.value == "Bash" and refusal.list == "deny"


def test_empty_or_null_lists_are_no_rule() -> None:
    for spec in ({"allow": []}, {"deny": []}, {"deny": None, "allow": None}, {}):
        rules = pr.compile_rules({"tools": spec})
        assert not rules.active and rules.broken is None
        assert rules.evaluate({"tools": [{"name": "anything"}]}, "m") is None


def test_models_dimension_judges_the_requested_model() -> None:
    rules = pr.compile_rules({"models": {"allow": ["^gpt-4o"]}})
    assert rules.evaluate({}, "gpt-4o-mini") is None
    refusal = rules.evaluate({}, "claude-opus-4-1")
    assert refusal is not None and refusal.dimension == "models" and refusal.list == "allow"


def test_utf8_patterns_and_values() -> None:
    rules = pr.compile_rules({"tools": {"deny": ["^outil_é$"]}, "urls": {"deny": ["例え"]}})
    assert rules.evaluate({"tools": [{"name": "outil_é"}]}, "m") is not None
    refusal = rules.evaluate({"messages": [{"content": "https://例え.jp/x"}]}, "m")
    assert refusal is not None and refusal.dimension == "urls"


# --- the hook ------------------------------------------------------------------------------------


def test_hook_without_rules_returns_at_once() -> None:
    ctx = ctx_for({"models_allowed": ["x"]}, gateway=object())  # no stash: never touched
    assert pr.admit(ctx) is None


def test_hook_refusals_are_gateway_errors() -> None:
    gw = FakeGateway()
    config = {"policy_rules": {"tools": {"deny": ["^Bash$"]}, "models": {"deny": ["^o1$"]}}}
    body = {"model": "gpt-4o", "messages": [], "tools": [{"name": "Bash"}]}
    with pytest.raises(ToolNotAllowed) as tool:
        pr.admit(ctx_for(config, body, gw))
    assert tool.value.code == "tool_not_allowed" and "vk_1" in tool.value.message
    with pytest.raises(ModelNotAllowed) as model:
        pr.admit(ctx_for(config, {"model": "o1", "messages": []}, gw))
    assert model.value.code == "policy_rules"
    pr.admit(ctx_for(config, {"model": "gpt-4o", "messages": []}, gw))


def test_compile_failure_is_logged_once_per_policy(caplog: pytest.LogCaptureFixture) -> None:
    gw = FakeGateway()
    config = {"policy_rules": {"urls": {"deny": ["ok", "[x"]}}}
    with caplog.at_level(logging.WARNING, logger="tollway.policy_rules"):
        for _ in range(3):
            with pytest.raises(ServiceUnavailable) as info:
                pr.admit(ctx_for(dict(config), gateway=gw))  # equal content, new objects
            assert info.value.code == "policy_rules_broken"
            assert info.value.headers()["X-LangWatch-Retry-After"] == "300"
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("policy_rules_compile_failed") for m in messages) == 1
    assert sum(m.startswith("policy_rules_broken") for m in messages) == 3
    assert 'dimension=urls pattern="[x"' in messages[0]


def test_cache_is_bounded_and_keyed_by_content() -> None:
    cache = pr.RulesCache(max_entries=2)
    a = cache.get({"tools": {"deny": ["a"]}})
    assert cache.get({"tools": {"deny": ["a"]}}) is a
    cache.get({"tools": {"deny": ["b"]}})
    cache.get({"tools": {"deny": ["c"]}})
    assert len(cache) == 2
    assert cache.get({"tools": {"deny": ["a"]}}) is not a  # evicted, compiled again
