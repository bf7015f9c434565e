"""Guardrails end to end: official SDKs → gateway subprocess → simulator subprocess, with the
webhook evaluator served from this test process on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from guardrails_harness import WEBHOOK_SECRET, Gateway, WebhookServer, start_gateway

from tollway.testing import Simulator, free_port, start_simulator, stop

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    yield server
    server.close()


def _webhook(url: str, **extra: Any) -> dict[str, Any]:
    return {"evaluator": "webhook", "url": url, **extra}


@pytest.fixture(scope="module")
def gw(
    sim: Simulator, hook: WebhookServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    down = _webhook(f"http://127.0.0.1:{free_port()}/check", timeout_ms=1000)
    signed = {"secret": WEBHOOK_SECRET}
    keys: dict[str, dict[str, Any]] = {
        "down_pre": {"guardrails": {"pre": [down]}},
        "down_pre_open": {"guardrails": {"pre": [down], "fail_open": {"pre": True}}},
        "down_post": {"guardrails": {"post": [down]}},
        "down_post_open": {"guardrails": {"post": [down], "fail_open": {"post": True}}},
        "down_stream": {"guardrails": {"stream_chunk": [down]}},
        "error_pre": {"guardrails": {"pre": [_webhook(f"{hook.url}/error")]}},
        "bad_pre_open": {
            "guardrails": {"pre": [_webhook(f"{hook.url}/bad")], "fail_open": {"pre": True}}
        },
        "block_pre": {"guardrails": {"pre": [_webhook(f"{hook.url}/block", **signed)]}},
        "block_post": {"guardrails": {"post": [_webhook(f"{hook.url}/block")]}},
        "block_stream": {"guardrails": {"stream_chunk": [_webhook(f"{hook.url}/block-stream")]}},
        "block_stream_sync": {
            "guardrails": {"stream_chunk": [{"evaluator": "pii", "action": "block"}]}
        },
        "slow_stream": {"guardrails": {"stream_chunk": [_webhook(f"{hook.url}/slow")]}},
        "flag_stream": {"guardrails": {"stream_chunk": [_webhook(f"{hook.url}/flag-simulator")]}},
        "censor": {
            "guardrails": {
                "pre": [_webhook(f"{hook.url}/censor", **signed)],
                "post": [_webhook(f"{hook.url}/censor", **signed)],
            }
        },
        "concurrent": {
            "guardrails": {
                "pre": [
                    _webhook(f"{hook.url}/slow"),
                    _webhook(f"{hook.url}/slow"),
                    _webhook(f"{hook.url}/allow"),
                    "pii",
                    _webhook(f"{hook.url}/censor"),
                ]
            }
        },
        "first_block_wins": {
            "guardrails": {"pre": [_webhook(f"{hook.url}/slow"), _webhook(f"{hook.url}/block")]}
        },
        "unknown_evaluator": {"guardrails": {"pre": ["no-such-evaluator"]}},
    }
    g = start_gateway(tmp_path_factory.mktemp("guardrails-gw"), sim.url, keys)
    yield g
    stop(g.proc)


def _error(r: httpx.Response, status: int, type_: str, code: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == (type_, code), err
    return str(err["message"])


def _err(exc: openai.APIStatusError | anthropic.APIStatusError) -> dict[str, Any]:
    """The error object of an SDK exception (openai unwraps ``error``; anthropic does not)."""
    body: Any = exc.body
    assert isinstance(body, dict), body
    return dict(body.get("error", body))


def _fail_open_logs(gw: Gateway, direction: str) -> list[dict[str, Any]]:
    return [
        line
        for line in gw.log_records()
        if line["msg"].startswith("guardrail_fail_open") and line.get("direction") == direction
    ]


# --- an evaluator that is down -------------------------------------------------------------


def test_pre_evaluator_down_fails_closed_by_default(gw: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        gw.openai("down_pre").chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.status_code == 503
    err = _err(info.value)
    assert (err["type"], err["code"]) == ("service_unavailable", "guardrail_unavailable")
    assert "'webhook'" in err["message"] and "pre" in err["message"]
    assert "fail_open.pre" in err["message"]  # says what to do
    assert info.value.response.headers["retry-after"] == "5"


def test_pre_evaluator_down_with_fail_open_passes_and_logs(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    r = gw.openai("down_pre_open").chat.completions.create(model="gpt-4o", messages=HELLO)
    assert r.choices[0].message.content
    assert sim.requests(), "the request should have reached the provider"
    lines = _fail_open_logs(gw, "pre")
    assert lines and lines[-1]["evaluator"] == "webhook"
    assert lines[-1]["level"] == "warning"
    assert "cannot connect" in lines[-1]["reason"]


def test_post_evaluator_down_fails_closed_after_the_provider_answered(
    gw: Gateway, sim: Simulator
) -> None:
    sim.clear()
    with pytest.raises(anthropic.InternalServerError) as info:
        gw.anthropic("down_post").messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=HELLO
        )
    assert info.value.status_code == 503
    assert sim.requests(), "post guardrails run after the provider answered"
    err = _err(info.value)
    assert err["code"] == "guardrail_unavailable" and "fail_open.post" in err["message"]


def test_post_evaluator_down_with_fail_open_passes(gw: Gateway) -> None:
    r = gw.anthropic("down_post_open").messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=HELLO
    )
    assert "Hello from the Tollway simulator" in r.content[0].text  # type: ignore[union-attr]
    assert _fail_open_logs(gw, "post")


def test_stream_chunk_evaluator_down_fails_open_by_contract(gw: Gateway) -> None:
    stream = gw.openai("down_stream").chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("Hello from the Tollway simulator.")
    time.sleep(0.2)  # the fail-open was logged before the chunk was relayed; let the file catch up
    lines = _fail_open_logs(gw, "stream_chunk")
    assert lines and lines[-1]["evaluator"] == "webhook"


def test_webhook_http_error_fails_closed(gw: Gateway) -> None:
    r = gw.post("error_pre", "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO})
    message = _error(r, 503, "service_unavailable", "guardrail_unavailable")
    assert "HTTP 500" in message


def test_webhook_bad_answer_with_fail_open_passes(gw: Gateway) -> None:
    r = gw.post("bad_pre_open", "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO})
    assert r.status_code == 200, r.text
    assert any("invalid JSON" in line["reason"] for line in _fail_open_logs(gw, "pre"))


def test_unknown_evaluator_name_fails_closed_and_says_to_fix_the_config(gw: Gateway) -> None:
    r = gw.post(
        "unknown_evaluator",
        "/v1/messages",
        {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": HELLO},
    )
    message = _error(r, 503, "service_unavailable", "guardrail_unavailable")
    assert "no-such-evaluator" in message and "installed: pii, webhook" in message
    assert r.json()["type"] == "error"  # the Anthropic envelope
    assert r.headers["x-should-retry"] == "false"  # retrying cannot fix a config


# --- block ----------------------------------------------------------------------------------


def test_webhook_block_on_pre_is_a_403_with_the_reason(
    gw: Gateway, sim: Simulator, hook: WebhookServer
) -> None:
    sim.clear()
    hook.clear()
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("block_pre").chat.completions.create(model="gpt-4o", messages=HELLO)
    err = _err(info.value)
    assert (err["type"], err["code"]) == ("guardrail_blocked", "guardrail_blocked")
    assert err["message"] == "the policy service refused this (pre)"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert not sim.requests(), "a blocked request never reaches the provider"
    (call,) = hook.calls_for("block")
    assert call["verified"], "the X-Tollway-Signature must be HMAC-SHA256(secret, body)"
    body = call["body"]
    assert body["direction"] == "pre"
    assert body["vk_id"] == "vk_block_pre"
    assert body["request_id"] == info.value.response.headers["x-langwatch-request-id"]
    assert body["content"] == {
        "messages": [{"role": "user", "content": "Say hello"}],
        "model": "gpt-4o",
    }


def test_unsigned_webhook_calls_carry_no_signature(gw: Gateway, hook: WebhookServer) -> None:
    hook.clear()
    with pytest.raises(anthropic.PermissionDeniedError):
        gw.anthropic("block_post").messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=HELLO
        )
    (call,) = hook.calls_for("block")
    assert call["signature"] is None
    assert call["body"]["direction"] == "post"
    assert call["body"]["content"]["output"].startswith("Hello from the Tollway simulator.")


def test_webhook_block_on_stream_chunk_raises_in_the_openai_sdk(gw: Gateway) -> None:
    stream = gw.openai("block_stream").chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "the policy service refused this (stream_chunk)" in str(info.value)
    # The chunk is held until the verdict: the first text chunk was blocked, none reached us.
    assert "".join(received) == ""


def test_webhook_block_on_stream_chunk_raises_in_the_anthropic_sdk(gw: Gateway) -> None:
    client = gw.anthropic("block_stream")
    received = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO) as stream,
    ):
        for text in stream.text_stream:
            received.append(text)
    assert "stream_chunk_blocked" in str(info.value.body)
    assert "".join(received) == ""


# --- a fast stream, a 5 ms webhook: the flagged chunk never reaches the client ---------------


def test_a_5ms_webhook_blocks_the_flagged_chunk_of_a_fast_stream_openai(gw: Gateway) -> None:
    stream = gw.openai("flag_stream").chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        stream=True,
        extra_headers={"x-simulator-event-delay-ms": "0"},
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "flagged simulator" in str(info.value)
    text = "".join(received)
    assert "simulator" not in text
    assert "Hello from the Tollway".startswith(text)  # what came before it, in order


def test_a_5ms_webhook_blocks_the_flagged_chunk_of_a_fast_stream_anthropic(
    gw: Gateway,
) -> None:
    client = gw.anthropic("flag_stream")
    received = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=HELLO,
            extra_headers={"x-simulator-event-delay-ms": "0"},
        ) as stream,
    ):
        for text in stream.text_stream:
            received.append(text)
    assert "flagged simulator" in str(info.value.body)
    assert "simulator" not in "".join(received)


def test_a_5ms_webhook_blocks_the_flagged_chunk_of_a_responses_stream(gw: Gateway) -> None:
    deltas: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for event in gw.openai("flag_stream").responses.create(
            model="gpt-4o",
            input="Say hello",
            stream=True,
            extra_headers={"x-simulator-event-delay-ms": "0"},
        ):
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert "flagged simulator" in str(info.value)
    assert "simulator" not in "".join(deltas)


def test_sync_evaluator_blocks_the_very_chunk_it_judged(gw: Gateway) -> None:
    messages = [{"role": "user", "content": "write to bob@example.org"}]
    stream = gw.openai("block_stream_sync").chat.completions.create(
        model="gpt-4o", messages=messages, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "personal data" in str(info.value)
    assert "bob@example.org" not in "".join(received)


def test_first_block_wins_without_waiting_for_slower_evaluators(gw: Gateway) -> None:
    started = time.perf_counter()
    r = gw.post("first_block_wins", "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO})
    elapsed = time.perf_counter() - started
    assert _error(r, 403, "guardrail_blocked", "guardrail_blocked").endswith("(pre)")
    assert elapsed < 0.45, "the slow evaluator (500 ms) was cancelled by the block"


# --- modify ---------------------------------------------------------------------------------


def test_webhook_modify_rewrites_request_and_response_openai(
    gw: Gateway, sim: Simulator, hook: WebhookServer
) -> None:
    sim.clear()
    hook.clear()
    r = gw.openai("censor").chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "never say secret-word"},
            {"role": "user", "content": [{"type": "text", "text": "tell me the secret-word"}]},
        ],
    )
    sent = json.loads(sim.last_body())["messages"]
    assert sent[0]["content"] == "never say [CENSORED]"
    assert sent[1]["content"] == [{"type": "text", "text": "tell me the [CENSORED]"}]
    assert r.choices[0].message.content.endswith("tell me the [CENSORED]")  # type: ignore[union-attr]
    assert all(c["verified"] for c in hook.calls_for("censor"))


def test_webhook_modify_rewrites_the_response_anthropic(gw: Gateway, sim: Simulator) -> None:
    sim.clear()
    r = gw.anthropic("censor").messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        system="you may say secret-word",
        messages=[{"role": "user", "content": "say secret-word"}],
    )
    sent = json.loads(sim.last_body())
    assert sent["system"] == "you may say [CENSORED]"
    assert sent["messages"][0]["content"] == "say [CENSORED]"
    assert r.content[0].text.endswith("say [CENSORED]")  # type: ignore[union-attr]


def test_evaluators_run_concurrently_and_modifies_apply_in_order(
    gw: Gateway, sim: Simulator
) -> None:
    sim.clear()
    started = time.perf_counter()
    gw.openai("concurrent").chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "secret-word to carol@example.net"}],
    )
    elapsed = time.perf_counter() - started
    # Both pii and the censor webhook rewrote different parts; both edits reached upstream.
    assert json.loads(sim.last_body())["messages"][0]["content"] == "[CENSORED] to [REDACTED_EMAIL]"
    assert elapsed < 0.95, "five evaluators, two of them 500 ms slow, ran concurrently"


# --- the stream_chunk budget ----------------------------------------------------------------


def test_a_slow_chunk_evaluator_fails_open_at_the_budget(gw: Gateway) -> None:
    stream = gw.openai("slow_stream").chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        stream=True,
        extra_headers={"x-simulator-output-words": "4", "x-simulator-event-delay-ms": "0"},
    )
    words = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    # The evaluator sleeps 500 ms per chunk; past the budget every chunk passes.
    assert "".join(words) == "Hello from the Tollway"
    reasons = [line["reason"] for line in _fail_open_logs(gw, "stream_chunk")]
    assert any(r.startswith("timeout") for r in reasons), reasons
