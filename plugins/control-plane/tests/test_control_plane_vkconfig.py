"""Key config validation (paths in every error) and the merge used by ``update``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway_control_plane.vkconfig import merge_patch, validate_key_config

FULL = {
    "models_allowed": ["gpt-4o*", "claude-sonnet-4-5", "*"],
    "model_aliases": {"fast": "gpt-4o-mini"},
    "rate_limits": {"rpm": 60, "rpd": None, "tpm": 10000},
    "cache": {"mode": "force", "ttl_s": 0},
    "response_cache": {"ttl_s": 300},
    "policy_rules": {
        "tools": {"deny": ["^shell\\.", "rm -rf"], "allow": None},
        "mcp": {"allow": ["^github$"]},
        "urls": {"deny": ["(?i)internal\\.example\\.com"]},
        "models": None,
    },
    "guardrails": {
        "pre": [
            "pii",
            {"evaluator": "webhook", "url": "https://g.example.com", "timeout_ms": 2000},
        ],
        "post": [],
        "stream_chunk": None,
        "fail_open": {"pre": True, "post": False},
    },
    "fallback": {"max_attempts": 2},
    "tags": ["team:ml"],
}


def test_a_full_config_is_valid() -> None:
    assert validate_key_config(FULL) == []
    assert validate_key_config({}) == []
    assert validate_key_config({k: None for k in FULL}) == []
    assert validate_key_config({"tags": {"owner": "ml"}}) == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ([], "config: must be a JSON object, not an array"),
        ({"model_allowed": []}, "model_allowed: unknown key (known: models_allowed, "),
        ({"models_allowed": "gpt-4o"}, "models_allowed: must be an array of strings or null"),
        (
            {"models_allowed": ["ok", 3]},
            "models_allowed[1]: must be a model id or glob, not an integer",
        ),
        (
            {"models_allowed": ["gpt-*-mini"]},
            "models_allowed[0]: 'gpt-*-mini': '*' is only allowed at the end",
        ),
        ({"model_aliases": {"a": ""}}, "model_aliases.a: must be the model id to use"),
        (
            {"model_aliases": ["a"]},
            "model_aliases: must be an object (alias → model) or null, not an array",
        ),
        ({"rate_limits": {"rps": 3}}, "rate_limits.rps: unknown key (known: rpm, rpd, tpm)"),
        (
            {"rate_limits": {"rpm": 0}},
            "rate_limits.rpm: must be an integer >= 1 (null: no limit) or null, not 0",
        ),
        (
            {"rate_limits": {"tpm": True}},
            "rate_limits.tpm: must be an integer >= 1 (null: no limit) or null, not a boolean",
        ),
        (
            {"rate_limits": {"rpd": 1.5}},
            "rate_limits.rpd: must be an integer >= 1 (null: no limit) or null, not a number",
        ),
        ({"rate_limits": 5}, "rate_limits: must be an object or null, not an integer"),
        ({"cache": {"mode": "on"}}, "cache.mode: must be one of respect, disable, force, not 'on'"),
        (
            {"cache": {"ttl_s": -1}},
            "cache.ttl_s: must be an integer >= 0 (seconds) or null, not -1",
        ),
        ({"response_cache": {"ttl": 5}}, "response_cache.ttl: unknown key (known: ttl_s)"),
        (
            {"response_cache": {"ttl_s": 0}},
            "response_cache.ttl_s: must be an integer >= 1 (seconds) or null, not 0",
        ),
        (
            {"policy_rules": {"tool": {}}},
            "policy_rules.tool: unknown key (known: tools, mcp, urls, models)",
        ),
        (
            {"policy_rules": {"tools": {"block": []}}},
            "policy_rules.tools.block: unknown key (known: deny, allow)",
        ),
        (
            {"policy_rules": {"tools": {"deny": "x"}}},
            "policy_rules.tools.deny: must be an array of RE2 patterns or null, not a string",
        ),
        (
            {"policy_rules": {"urls": {"allow": ["ok", 1]}}},
            "policy_rules.urls.allow[1]: must be a string (an RE2 pattern), not an integer",
        ),
        (
            {"policy_rules": {"tools": {"deny": ["ok", "(?<=x)y"]}}},
            "policy_rules.tools.deny[1]: pattern '(?<=x)y' is not valid RE2 (invalid perl operator",
        ),
        (
            {"policy_rules": {"mcp": {"allow": ["(unclosed"]}}},
            "policy_rules.mcp.allow[0]: pattern '(unclosed' is not valid RE2 (missing ):",
        ),
        (
            {"guardrails": {"pre": "pii"}},
            "guardrails.pre: must be an array of evaluators or null, not a string",
        ),
        (
            {"guardrails": {"post": [3]}},
            "guardrails.post[0]: must be an evaluator name or an object",
        ),
        (
            {"guardrails": {"pre": [{"url": "x"}]}},
            "guardrails.pre[0].evaluator: an inline evaluator object needs 'evaluator'",
        ),
        (
            {"guardrails": {"fail_open": {"pre": "yes"}}},
            "guardrails.fail_open.pre: must be true, false or null, not a string",
        ),
        (
            {"guardrails": {"fail_open": {"stream_chunk": True}}},
            "guardrails.fail_open.stream_chunk: unknown key (known: pre, post)",
        ),
        (
            {"fallback": {"max_attempts": 0}},
            "fallback.max_attempts: must be an integer >= 1 or null, not 0",
        ),
        ({"tags": [""]}, "tags[0]: must be a non-empty string (a tag), not an empty string"),
        ({"tags": "a"}, "tags: must be an array of tags or an object of tag values, not a string"),
        ({"tags": {"a": 1}}, "tags.a: a tag value must be a string, not an integer"),
    ],
)
def test_errors_name_the_path(config: Any, expected: str) -> None:
    problems = validate_key_config(config)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_every_problem_is_reported() -> None:
    problems = validate_key_config(
        {"rate_limits": {"rpm": -1, "tpm": "x"}, "cache": {"mode": 1}, "extra": 1}
    )
    assert [p.split(":")[0] for p in problems] == [
        "extra",
        "rate_limits.rpm",
        "rate_limits.tpm",
        "cache.mode",
    ]


def test_plugin_sections_are_accepted() -> None:
    calls: list[int] = []

    def sections() -> list[str]:
        calls.append(1)
        return ["my-plugin"]

    assert validate_key_config({"tags": ["a"]}, sections) == []
    assert calls == []  # only asked when a key is unknown
    assert validate_key_config({"my-plugin": {"anything": 1}}, sections) == []
    assert validate_key_config({"my-plugin": 3}, sections) == [
        "my-plugin: a plugin's section must be an object or null, not an integer"
    ]
    assert validate_key_config({"other": {}}, sections)[0].startswith(
        "other: unknown key (known: models_allowed"
    )
    assert validate_key_config({"other": {}}, sections)[0].endswith("tags, my-plugin)")


def test_merge_patch_examples() -> None:
    base = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}
    assert merge_patch(base, {"b": {"c": None, "e": 4}, "l": [3]}) == {
        "a": 1,
        "b": {"d": 3, "e": 4},
        "l": [3],
    }
    assert merge_patch(base, {"a": None, "b": None}) == {"l": [1, 2]}
    assert base == {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}  # not modified
    assert merge_patch({}, {"x": None, "y": {"z": None}}) == {"y": {}}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)
_objects = st.dictionaries(st.text(max_size=3), _json, max_size=4)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


@given(_objects, _objects)
def test_merge_patch_properties(target: dict[str, Any], patch: dict[str, Any]) -> None:
    merged = merge_patch(target, patch)
    # Applying the same patch twice changes nothing more (RFC 7386 patches are idempotent).
    assert merge_patch(merged, patch) == merged
    for key, value in patch.items():
        if value is None:
            assert key not in merged
        elif not isinstance(value, dict):
            assert merged[key] == value
    for key in target:
        if key not in patch:
            assert merged[key] == target[key]
    # Merging onto nothing drops every null (what create stores).
    assert merge_patch({}, patch) == _without_nulls(patch)
