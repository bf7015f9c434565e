"""The ``pii`` evaluator on its own: detection, redaction, settings, and the verdicts it gives
for each direction's content shape."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway import Verdict
from tollway.guardrails import (
    Evaluator,
    GuardrailRequest,
    SyncEvaluator,
    chunk_content,
    post_content,
    texts_from_content,
)
from tollway_pii_redact import ENTITIES, PiiEvaluator, detector

EMAIL = ENTITIES["email"].pattern
PHONE = ENTITIES["phone"].pattern
PII = PiiEvaluator()

local = st.text("abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=10).filter(
    lambda s: s[0].isalnum()
)
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
emails = st.builds(
    lambda u, d, t: f"{u}@{d}.{t}", local, label, st.sampled_from(["com", "org", "io"])
)
filler = st.text("abcdefg hijk ,;!?", max_size=12)


@given(before=filler, email=emails, after=filler)
def test_embedded_emails_are_redacted(before: str, email: str, after: str) -> None:
    text = f"{before} {email} {after}"
    redacted, n = detector({}).redact(text)
    assert n >= 1
    assert email not in redacted
    assert "[REDACTED_EMAIL]" in redacted
    assert EMAIL.search(redacted) is None


@given(text=st.text(max_size=40))
def test_redaction_is_idempotent(text: str) -> None:
    once, _ = detector({}).redact(text)
    twice, n = detector({}).redact(once)
    assert twice == once and n == 0


@pytest.mark.parametrize(
    "phone",
    ["+4915123456789", "555-123-4567", "+1 (555) 123-4567", "(030) 1234 5678", "+44 20 7946 0958"],
)
def test_phone_numbers_are_found(phone: str) -> None:
    assert detector({}).redact(f"call {phone} today")[0] == "call [REDACTED_PHONE] today"


@pytest.mark.parametrize(
    "text",
    ["version 1.2.3", "on 2024-01-15", "order 123456", "ip 192.168.100.200", "pi is 3.14159"],
)
def test_common_numbers_are_not_phone_numbers(text: str) -> None:
    assert detector({}).redact(text) == (text, 0)


def _request(direction: Any, content: dict[str, Any], **settings: Any) -> GuardrailRequest:
    return GuardrailRequest(direction, content, settings)


def test_it_is_a_sync_evaluator() -> None:
    assert isinstance(PII, Evaluator) and isinstance(PII, SyncEvaluator)


def test_pre_verdict() -> None:
    content = {
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "I am bob@example.com"},
        ],
        "model": "gpt-4o",
    }
    verdict = PII.evaluate_sync(_request("pre", content))
    assert verdict.decision == "modify" and verdict.evaluator == "pii"
    texts = texts_from_content("pre", verdict.content, ["be nice", "I am bob@example.com"])
    assert texts == ["be nice", "I am [REDACTED_EMAIL]"]
    assert verdict.content["model"] == "gpt-4o"


def test_post_and_stream_verdicts() -> None:
    post = PII.evaluate_sync(_request("post", post_content(["a@b.io", "none"])))
    assert texts_from_content("post", post.content, ["a@b.io", "none"]) == [
        "[REDACTED_EMAIL]",
        "none",
    ]
    chunk = asyncio.run(PII.evaluate(_request("stream_chunk", chunk_content([" x@y.org"]))))
    assert chunk.content == {"delta": " [REDACTED_EMAIL]", "deltas": [" [REDACTED_EMAIL]"]}


def test_nothing_found_allows() -> None:
    assert PII.evaluate_sync(_request("post", post_content(["hello"]))) == Verdict(
        "allow", evaluator="pii"
    )


def test_block_action() -> None:
    verdict = PII.evaluate_sync(
        _request("post", post_content(["call 555-123-4567"]), evaluator="pii", action="block")
    )
    assert verdict.decision == "block"
    assert verdict.reason.startswith("the response contains personal data (a phone number)")
    allowed = PII.evaluate_sync(
        _request("pre", {"messages": [{"role": "user", "content": "hi"}]}, action="block")
    )
    assert allowed.decision == "allow"


def test_entities_setting() -> None:
    verdict = PII.evaluate_sync(
        _request("post", post_content(["a@b.io 555-123-4567"]), entities=["phone"])
    )
    assert verdict.content["outputs"] == ["a@b.io [REDACTED_PHONE]"]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"entities": []}, "entities: must be a non-empty array"),
        ({"entities": ["ssn"]}, "entities[0]: unknown entity 'ssn'"),
        ({"action": "mask"}, "action: must be one of redact, block"),
        ({"mode": "x"}, "mode: unknown key (known: evaluator, timeout_ms, entities, action)"),
    ],
)
def test_settings_problems(settings: dict[str, Any], problem: str) -> None:
    assert any(p.startswith(problem) for p in PII.validate_settings(settings))
    with pytest.raises(ValueError):
        detector(settings)
