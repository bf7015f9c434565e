"""The ``block-words`` guardrail evaluator: refuse content that mentions configured words.

A key turns it on in its config, for any direction (the guardrails plugin,
``tollway-guardrails``, runs the evaluators a key names)::

    {"guardrails": {"pre": [{"evaluator": "block-words", "words": ["project zebra"]}],
                    "post": [{"evaluator": "block-words", "words": ["project zebra"]}]}}

Words match whole words, case-insensitively. The evaluator has ``evaluate_sync`` (no I/O, a
compiled regular expression), so it can also judge stream chunks inline. A stream chunk is
judged on its own: a word split across two chunks is not seen there (the ``post`` direction,
which sees the whole answer, applies to complete responses only).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from tollway import Verdict, hookimpl
from tollway.guardrails import GuardrailRequest, content_texts

__all__ = ["NAME", "BlockWordsEvaluator"]

#: The name keys use in their ``guardrails`` config.
NAME = "block-words"


@functools.lru_cache(maxsize=256)
def _pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """One compiled pattern per word list (cached: keys share a handful of lists)."""
    words = tuple(w for w in words if w)
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _words(settings: Mapping[str, Any]) -> tuple[str, ...]:
    words = settings.get("words")
    if not isinstance(words, list):
        return ()
    return tuple(w for w in words if isinstance(w, str))


class BlockWordsEvaluator:
    """Blocks content containing one of the ``words`` of its inline settings."""

    def validate_settings(self, settings: Mapping[str, Any]) -> list[str]:
        """Problems with a key's inline settings, checked when the key is written."""
        words = settings.get("words")
        if not isinstance(words, list) or not words:
            return ["words: give a non-empty list of words to block"]
        if not all(isinstance(w, str) and w.strip() for w in words):
            return ["words: every entry must be a non-empty string"]
        unknown = sorted(set(settings) - {"evaluator", "timeout_ms", "words"})
        if unknown:
            return [f"unknown setting(s) {', '.join(unknown)}; block-words takes `words`"]
        return []

    def evaluate_sync(self, request: GuardrailRequest) -> Verdict:
        """Judge in microseconds (no I/O): usable on every stream chunk."""
        pattern = _pattern(_words(request.settings))
        if pattern is None:
            return Verdict("allow", evaluator=NAME)
        texts = content_texts(request.direction, request.content)
        if request.direction == "stream_chunk":
            texts = ["".join(texts)]  # a word may straddle two deltas of one chunk
        for text in texts:
            match = pattern.search(text)
            if match:
                whose = "request" if request.direction == "pre" else "response"
                return Verdict(
                    "block",
                    f"the {whose} mentions {match.group(0)!r}, which this key does not allow; "
                    "rephrase without it",
                    NAME,
                )
        return Verdict("allow", evaluator=NAME)

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        return self.evaluate_sync(request)


@hookimpl
def register_guardrail_evaluators(register: Callable[[str, Any], None]) -> None:
    register(NAME, BlockWordsEvaluator())
