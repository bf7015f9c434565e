"""The pure rewrites: count, strip (disable) and add (force) ``cache_control`` markers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway_cache_passthrough import (
    MAX_BREAKPOINTS,
    count_markers,
    force_messages,
    iter_markers,
    strip_chat,
    strip_messages,
    validate_config,
)

DATA = Path(__file__).parent / "data"
EPHEMERAL = {"type": "ephemeral"}
ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}


def claude_code_bodies() -> list[dict[str, Any]]:
    return [r["body"] for r in json.loads((DATA / "claude-code-2.1.330-tool.json").read_text())]


def no_marker_anywhere(value: Any) -> bool:
    """No key ``cache_control`` at any depth (the generated bodies never use it as data)."""
    if isinstance(value, dict):
        return "cache_control" not in value and all(no_marker_anywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(no_marker_anywhere(v) for v in value)
    return True


# --- the real Claude Code requests ---------------------------------------------------------


def test_claude_code_has_three_markers() -> None:
    for body in claude_code_bodies():
        positions = [pos for pos, _ in iter_markers(body)]
        last = len(body["messages"]) - 1
        assert positions == [(1, 1), (1, 2), (2, last, len(body["messages"][last]["content"]) - 1)]


def test_disable_strips_claude_code() -> None:
    for body in claude_code_bodies():
        original = copy.deepcopy(body)
        out = strip_messages(body)
        assert out is not None
        assert body == original, "the input must not be mutated"
        assert b"cache_control" not in orjson.dumps(out)
        # Everything else is unchanged.
        assert orjson.dumps(out) == orjson.dumps(_drop_markers(original))


def test_force_keeps_claude_codes_three_and_adds_the_last_tool() -> None:
    for body in claude_code_bodies():
        original = copy.deepcopy(body)
        out = force_messages(body)
        assert out is not None
        assert body == original
        assert count_markers(out) == 4
        assert out["tools"][-1]["cache_control"] == EPHEMERAL
        assert out["tools"][-1]["name"] == "Write"
        for pos, marker in iter_markers(original):
            assert marker in [m for p, m in iter_markers(out) if p == pos]
        # Nothing but the last tool changed.
        out["tools"][-1] = original["tools"][-1]
        assert out == original


def test_force_one_hour_respects_ttl_order_with_claude_code() -> None:
    # Claude Code's markers are 5-minute ones in system and the last message. The tool comes
    # before them in prompt order, so a 1-hour marker there is valid.
    body = claude_code_bodies()[0]
    out = force_messages(body, one_hour=True)
    assert out is not None
    assert out["tools"][-1]["cache_control"] == ONE_HOUR


# --- hand-made cases -------------------------------------------------------------------------


def test_force_converts_string_system_and_content() -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 10,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}],
    }
    out = force_messages(body)
    assert out == {
        "model": "claude-x",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "be brief", "cache_control": EPHEMERAL}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}],
            }
        ],
    }
    assert force_messages(out) is None  # idempotent


def test_force_skips_empty_and_thinking_blocks_and_deferred_tools() -> None:
    body = {
        "system": [{"type": "text", "text": "s"}, {"type": "text", "text": ""}],
        "tools": [{"name": "a"}, {"name": "b", "defer_loading": True}],
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "x"}, {"type": "thinking", "thinking": "t"}],
            }
        ],
    }
    out = force_messages(body)
    assert out is not None
    assert [pos for pos, _ in iter_markers(out)] == [(0, 0), (1, 0), (2, 0, 0)]


def test_force_respects_the_limit_in_spec_order() -> None:
    marked = {"type": "text", "text": "m", "cache_control": EPHEMERAL}
    body = {
        "system": [{"type": "text", "text": "s"}],
        "tools": [{"name": "t"}],
        "messages": [
            {"role": "user", "content": [marked, marked]},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "u"},
        ],
    }
    out = force_messages(body)
    assert out is not None
    assert count_markers(out) == MAX_BREAKPOINTS
    # Room for two: the system block, then the tool; the last message is skipped.
    assert out["system"][0]["cache_control"] == EPHEMERAL
    assert out["tools"][0]["cache_control"] == EPHEMERAL
    assert out["messages"][2]["content"] == "u"


def test_force_never_adds_to_a_full_body() -> None:
    marked = {"type": "text", "text": "m", "cache_control": EPHEMERAL}
    body = {"system": "s", "messages": [{"role": "user", "content": [marked] * 4}]}
    assert force_messages(body) is None


def test_force_one_hour_not_after_a_five_minute_marker() -> None:
    body = {
        "tools": [{"name": "t"}],
        "system": [{"type": "text", "text": "s", "cache_control": EPHEMERAL}],
        "messages": [{"role": "user", "content": "u"}],
    }
    out = force_messages(body, one_hour=True)
    assert out is not None
    assert out["tools"][0]["cache_control"] == ONE_HOUR  # before the 5-minute system marker
    assert out["messages"][0]["content"][0]["cache_control"] == EPHEMERAL  # after it


def test_force_five_minutes_not_before_a_one_hour_marker() -> None:
    body = {
        "tools": [{"name": "t"}],
        "system": "s",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "u", "cache_control": ONE_HOUR}]}
        ],
    }
    out = force_messages(body)
    assert out is not None
    assert out["tools"][0]["cache_control"] == ONE_HOUR
    assert out["system"][0]["cache_control"] == ONE_HOUR


def test_strip_nested_and_top_level() -> None:
    body = {
        "cache_control": EPHEMERAL,
        "tools": [
            {
                "name": "t",
                "input_schema": {"properties": {"cache_control": {}}},
                "cache_control": EPHEMERAL,
            }
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "x",
                        "content": [{"type": "text", "text": "r", "cache_control": EPHEMERAL}],
                    }
                ],
            }
        ],
    }
    assert count_markers(body) == 3
    out = strip_messages(body)
    assert out is not None
    assert count_markers(out) == 0
    # A schema property named cache_control is the client's data: kept.
    assert out["tools"][0]["input_schema"] == {"properties": {"cache_control": {}}}
    assert strip_messages(out) is None


def test_strip_chat_parts() -> None:
    body = {
        "model": "claude-x",
        "messages": [
            {
                "role": "system",
                "content": [{"type": "text", "text": "s", "cache_control": EPHEMERAL}],
            },
            {"role": "user", "content": "hi"},
        ],
    }
    out = strip_chat(body)
    assert out == {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "s"}]},
            {"role": "user", "content": "hi"},
        ],
    }
    assert strip_chat(out) is None


def test_validate_config() -> None:
    assert validate_config({}) == []
    assert validate_config({"cache": {"mode": "force", "ttl_s": 3600}}) == []
    assert validate_config({"cache": {"mode": "off"}}) == [
        "cache.mode: 'off' is not one of respect, disable, force"
    ]
    assert validate_config({"cache": {"mode": "force", "ttl_s": -1, "x": 1}}) == [
        "cache.x: unknown field (known: mode, ttl_s)",
        "cache.ttl_s: -1 must be a positive number of seconds",
    ]


# --- properties --------------------------------------------------------------------------------

_text = st.text(alphabet="abc xyz", max_size=6)
_marker = st.one_of(st.none(), st.just(EPHEMERAL), st.just(ONE_HOUR))


def _with_marker(block: dict[str, Any], marker: Any) -> dict[str, Any]:
    return block if marker is None else {**block, "cache_control": marker}


_text_block = st.builds(lambda t, m: _with_marker({"type": "text", "text": t}, m), _text, _marker)
_thinking = st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "s"}, _text)
_tool_result = st.builds(
    lambda inner, m: _with_marker(
        {"type": "tool_result", "tool_use_id": "t1", "content": inner}, m
    ),
    st.lists(_text_block, max_size=2),
    _marker,
)
_block = st.one_of(_text_block, _thinking, _tool_result)
_content = st.one_of(_text, st.lists(_block, max_size=4))
_message = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["user", "assistant", "system"]),
    _content,
)
_tool = st.builds(
    lambda name, deferred, m: _with_marker(
        {
            "name": name,
            "input_schema": {"type": "object"},
            **({"defer_loading": True} if deferred else {}),
        },
        m,
    ),
    _text,
    st.booleans(),
    _marker,
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-x", "max_tokens": 16}
    body["messages"] = draw(st.lists(_message, min_size=1, max_size=5))
    system = draw(st.one_of(st.none(), _text, st.lists(_text_block, max_size=4)))
    if system is not None:
        body["system"] = system
    if draw(st.booleans()):
        body["tools"] = draw(st.lists(_tool, max_size=4))
    top = draw(_marker)
    if top is not None:
        body["cache_control"] = top
    return body


@settings(max_examples=300, deadline=None)
@given(bodies())
def test_disable_removes_every_marker(body: dict[str, Any]) -> None:
    original = copy.deepcopy(body)
    out = strip_messages(body)
    assert body == original
    if out is None:
        assert count_markers(body) == 0 and no_marker_anywhere(body)
    else:
        assert no_marker_anywhere(out)
        assert b"cache_control" not in orjson.dumps(out)
        assert out == _drop_markers(original)


@settings(max_examples=300, deadline=None)
@given(bodies(), st.booleans())
def test_force_bounded_idempotent_and_keeps_existing(body: dict[str, Any], one_hour: bool) -> None:
    original = copy.deepcopy(body)
    before = list(iter_markers(body))
    out = force_messages(body, one_hour=one_hour)
    assert body == original
    if out is None:
        return
    after = list(iter_markers(out))
    assert len(after) <= MAX_BREAKPOINTS
    assert len(after) > len(before)
    # Existing markers survive unchanged (string content converted to a block keeps position
    # semantics; markers never sit in a string).
    for pos, marker in before:
        assert (pos, marker) in after
    # Idempotent: a second pass adds nothing.
    assert force_messages(out, one_hour=one_hour) is None
    # Stripping what force produced gives back the stripped original (force only adds markers
    # and turns strings into single text blocks).
    assert _normalise(_drop_markers(out)) == _normalise(_drop_markers(original))
    # TTL order holds whenever it held before: no 1-hour marker after a 5-minute one.
    if _ttl_ordered(before):
        assert _ttl_ordered(after)


def _ttl_ordered(markers: list[tuple[tuple[int, ...], Any]]) -> bool:
    seen_short = False
    for _, marker in sorted(markers, key=lambda pm: pm[0]):
        long = isinstance(marker, dict) and marker.get("ttl") == "1h"
        if long and seen_short:
            return False
        seen_short = seen_short or not long
    return True


def _drop_markers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_markers(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_drop_markers(v) for v in value]
    return value


def _normalise(body: dict[str, Any]) -> dict[str, Any]:
    """Strings where force made single text blocks, so the two can be compared."""
    out = dict(body)
    system = out.get("system")
    if isinstance(system, list) and len(system) == 1 and set(system[0]) == {"type", "text"}:
        out["system"] = system[0]["text"]
    messages = []
    for message in out.get("messages", []):
        content = message.get("content")
        if isinstance(content, list) and len(content) == 1 and set(content[0]) == {"type", "text"}:
            message = {**message, "content": content[0]["text"]}
        messages.append(message)
    out["messages"] = messages
    return out
