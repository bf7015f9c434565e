"""The ``pii`` evaluator end to end: official SDKs → gateway (with tollway-guardrails) →
simulator. The simulator echoes the first words of the user's text, so an email address in the
prompt comes back in the answer: that is how post and stream redaction are seen."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pii_redact_harness import Gateway, start_gateway

from tollway.testing import Simulator, start_simulator, stop

PROMPT = "mail alice@example.com or call 555-123-4567"
REDACTED = "mail [REDACTED_EMAIL] or call [REDACTED_PHONE]"
USER = [{"role": "user", "content": PROMPT}]

KEYS: dict[str, dict[str, Any]] = {
    "pre": {"guardrails": {"pre": ["pii"]}},
    "post": {"guardrails": {"post": ["pii"]}},
    "stream": {"guardrails": {"stream_chunk": ["pii"]}},
    "block": {"guardrails": {"pre": [{"evaluator": "pii", "action": "block"}]}},
    "email_only": {"guardrails": {"post": [{"evaluator": "pii", "entities": ["email"]}]}},
}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("pii-gw"), sim.url, KEYS)
    yield g
    stop(g.proc)


@pytest.fixture(scope="module")
def gw_no_window(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = "[plugin.guardrails]\nstream_chunk_window_chars = 0\n"
    g = start_gateway(tmp_path_factory.mktemp("pii-gw-nowin"), sim.url, KEYS, config)
    yield g
    stop(g.proc)


def _user_text_sent(sim: Simulator) -> str:
    body = json.loads(sim.last_body())
    if "messages" in body:
        content = body["messages"][-1]["content"]
        return content if isinstance(content, str) else content[0]["text"]
    value = body["input"]
    return value if isinstance(value, str) else value[-1]["content"]


# --- pre: the provider never sees the data ------------------------------------------------------


def test_pre_redacts_the_request_openai_chat(gw: Gateway, sim: Simulator) -> None:
    r = gw.openai("pre").chat.completions.create(model="gpt-4o", messages=USER)
    assert _user_text_sent(sim) == REDACTED
    assert r.choices[0].message.content.endswith(REDACTED)  # type: ignore[union-attr]


def test_pre_redacts_the_request_anthropic(gw: Gateway, sim: Simulator) -> None:
    r = gw.anthropic("pre").messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        system="The operator is ops@example.org.",
        messages=[{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
    )
    body = json.loads(sim.last_body())
    assert body["system"] == "The operator is [REDACTED_EMAIL]."
    assert body["messages"][0]["content"][0]["text"] == REDACTED
    assert r.content[0].text.endswith(REDACTED)  # type: ignore[union-attr]


def test_pre_redacts_the_request_responses_api(gw: Gateway, sim: Simulator) -> None:
    r = gw.openai("pre").responses.create(model="gpt-4o", input=PROMPT)
    assert _user_text_sent(sim) == REDACTED
    assert r.output_text.endswith(REDACTED)


def test_block_action_refuses_the_request(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("block").chat.completions.create(model="gpt-4o", messages=USER)
    assert "personal data (an email address)" in info.value.message
    assert not sim.requests()
    # Without personal data the same key passes.
    ok = gw.openai("block").chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello there"}]
    )
    assert ok.choices[0].message.content


# --- post: the provider sees it, the client does not -------------------------------------------


def test_post_redacts_the_response_openai_chat(gw: Gateway, sim: Simulator) -> None:
    r = gw.openai("post").chat.completions.create(model="gpt-4o", messages=USER)
    assert _user_text_sent(sim) == PROMPT
    assert r.choices[0].message.content.endswith(REDACTED)  # type: ignore[union-attr]


def test_post_redacts_the_response_anthropic(gw: Gateway) -> None:
    r = gw.anthropic("post").messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=USER
    )
    assert r.content[0].text.endswith(REDACTED)  # type: ignore[union-attr]


def test_post_redacts_a_translated_response(gw: Gateway) -> None:
    # OpenAI client, Anthropic provider: the guardrail sees the client's format.
    r = gw.openai("post").chat.completions.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=USER
    )
    assert r.choices[0].message.content.endswith(REDACTED)  # type: ignore[union-attr]


def test_post_redacts_the_response_responses_api(gw: Gateway) -> None:
    r = gw.openai("post").responses.create(model="gpt-4o", input=PROMPT)
    assert r.output_text.endswith(REDACTED)


def test_entities_setting_limits_what_is_redacted(gw: Gateway) -> None:
    r = gw.openai("email_only").chat.completions.create(model="gpt-4o", messages=USER)
    assert r.choices[0].message.content.endswith(  # type: ignore[union-attr]
        "mail [REDACTED_EMAIL] or call 555-123-4567"
    )


# --- stream_chunk: each chunk rewritten in place ---------------------------------------------


def test_stream_redacts_openai_chat_chunks(gw: Gateway, sim: Simulator) -> None:
    stream = gw.openai("stream").chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert _user_text_sent(sim) == PROMPT
    assert text.endswith(REDACTED)
    assert "alice@example.com" not in text


def test_stream_redacts_anthropic_events(gw: Gateway) -> None:
    with gw.anthropic("stream").messages.stream(
        model="claude-sonnet-4-5", max_tokens=64, messages=USER
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.endswith(REDACTED)
    assert final.content[0].text == text  # type: ignore[union-attr]


def test_stream_redacts_a_translated_stream(gw: Gateway) -> None:
    stream = gw.openai("stream").chat.completions.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=USER, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.endswith(REDACTED)


def test_stream_redacts_responses_events_and_the_final_response(gw: Gateway) -> None:
    deltas: list[str] = []
    final_text = ""
    for event in gw.openai("stream").responses.create(model="gpt-4o", input=PROMPT, stream=True):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final_text = event.response.output_text
    assert "".join(deltas).endswith(REDACTED)
    assert final_text.endswith(REDACTED)


# --- stream_chunk: a pattern split across deltas is judged whole ------------------------------

#: The answer cut into 7-character deltas, one per upstream chunk: "alice@example.com" spans
#: three of them.
SPLIT = {"x-simulator-chunk-chars": "7", "x-simulator-event-delay-ms": "5"}


def test_stream_redacts_an_email_split_across_deltas_openai(gw: Gateway) -> None:
    stream = gw.openai("stream").chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, extra_headers=SPLIT
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.endswith(REDACTED), text
    assert "alice" not in text and "example" not in text


def test_stream_redacts_an_email_split_across_deltas_anthropic(gw: Gateway) -> None:
    with gw.anthropic("stream").messages.stream(
        model="claude-sonnet-4-5", max_tokens=64, messages=USER, extra_headers=SPLIT
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.endswith(REDACTED), text
    assert final.content[0].text == text  # type: ignore[union-attr]


def test_stream_redacts_an_email_split_across_deltas_responses(gw: Gateway) -> None:
    deltas: list[str] = []
    final_text = ""
    for event in gw.openai("stream").responses.create(
        model="gpt-4o", input=PROMPT, stream=True, extra_headers=SPLIT
    ):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final_text = event.response.output_text
    assert "".join(deltas).endswith(REDACTED)
    assert final_text.endswith(REDACTED)


def test_without_the_window_a_split_email_gets_through(gw_no_window: Gateway) -> None:
    """The test above can fail: with ``stream_chunk_window_chars = 0`` each delta is judged on
    its own and the split address reaches the client."""
    stream = gw_no_window.openai("stream").chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, extra_headers=SPLIT
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "alice@example.com" in text


def _cut_stream(gw: Gateway, key: str) -> tuple[str, str]:
    """The text an openai client receives before a mid-stream cut, and the error."""
    stream = gw.openai(key).chat.completions.create(
        model="gpt-4o",
        messages=USER,
        stream=True,
        extra_headers={"x-simulator-fault": "midstream:6", "x-simulator-event-delay-ms": "5"},
    )
    text = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
    return text, str(info.value)


def test_an_upstream_cut_flushes_the_held_text_before_the_error(gw: Gateway) -> None:
    # The "pre" key has no stream guardrails: what an unguarded stream shows before the cut.
    unguarded, _ = _cut_stream(gw, "pre")
    held, error = _cut_stream(gw, "stream")
    assert unguarded  # the cut comes after some text
    assert held == unguarded, "the window's held text was relayed before the error frame"
    assert "failed mid-stream" in error
