"""Guardrails see the text of the other wires (issue 27): speech and moderation input, image and
transcription prompts, the messages being counted."""

from __future__ import annotations

from tollway.guardrails import request_texts


def test_other_wires_have_text() -> None:
    assert [s.text for s in request_texts("speech", {"model": "tts-1", "input": "say"})] == ["say"]
    assert [s.path for s in request_texts("moderations", {"input": ["a", "b"]})] == [
        ("input", 0),
        ("input", 1),
    ]
    assert [s.text for s in request_texts("images", {"prompt": "a cat"})] == ["a cat"]
    assert [s.text for s in request_texts("transcriptions", {"prompt": "names: Ada"})] == [
        "names: Ada"
    ]
    counted = request_texts(
        "count_tokens", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert [(s.role, s.text) for s in counted] == [("user", "hi")]
    assert request_texts("realtime_client_secrets", {"session": {"instructions": "x"}}) == []
