"""The ``pii`` guardrail evaluator: find email addresses and phone numbers (RE2) and redact them
(``modify``) or refuse the content (``block``).

A key uses it by name, in any direction::

    {"guardrails": {"pre": ["pii"], "post": ["pii"], "stream_chunk": ["pii"]}}

or with settings inline::

    {"guardrails": {"pre": [{"evaluator": "pii", "entities": ["email"], "action": "block"}]}}

It is also the example of a third-party evaluator: one class with ``async evaluate`` (and
``evaluate_sync``, so it can rewrite stream chunks in place), registered by name with the
``register_guardrail_evaluators`` hook. It works on the list of texts
:func:`tollway.guardrails.content_texts` gives for any direction and answers with
:func:`tollway.guardrails.with_texts`, so it never looks at a wire format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import re2

from tollway import Verdict, hookimpl
from tollway.guardrails import GuardrailRequest, content_texts, with_texts

__all__ = [
    "ACTIONS",
    "ENTITIES",
    "NAME",
    "Detector",
    "Entity",
    "PiiEvaluator",
    "detector",
]

#: The registered evaluator name.
NAME = "pii"
ACTIONS = ("redact", "block")
SETTINGS_KEYS = ("evaluator", "timeout_ms", "entities", "action")


def _compile(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


@attrs.frozen
class Entity:
    """One kind of personal data: how to find it and what replaces it."""

    name: str
    #: What the block reason calls it (``an email address``).
    noun: str
    pattern: Any
    replacement: str
    #: A cheap test: text that cannot contain the entity skips the regex.
    hint: Callable[[str], bool]


#: The digits RE2's ``\d`` matches (ASCII only): a phone number needs at least one.
_DIGITS = frozenset("0123456789")


def _has_digit(text: str) -> bool:
    return not _DIGITS.isdisjoint(text)


ENTITIES: dict[str, Entity] = {
    "email": Entity(
        "email",
        "an email address",
        _compile(
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
            r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
        ),
        "[REDACTED_EMAIL]",
        lambda text: "@" in text,
    ),
    "phone": Entity(
        "phone",
        "a phone number",
        # E.164 (+4915123456789), or groups split by spaces or hyphens with an optional
        # country code and area code in parentheses: +1 (555) 123-4567, 555-123-4567,
        # 030 1234 5678. Dotted groups are left alone (they are usually versions or addresses).
        _compile(
            r"(?:\+[1-9]\d{7,14}\b)"
            r"|(?:(?:\+\d{1,3}[ -]?)?(?:\(\d{2,4}\)[ -]?|\b\d{2,4}[ -])\d{3,4}[ -]\d{3,4}\b)"
        ),
        "[REDACTED_PHONE]",
        _has_digit,
    ),
}


@attrs.frozen
class Detector:
    """The entities one settings object asks for, and what to do when they are found."""

    entities: tuple[Entity, ...]
    action: str = "redact"

    def redact(self, text: str) -> tuple[str, int]:
        """``text`` with every entity replaced, and how many were."""
        total = 0
        for entity in self.entities:
            if entity.hint(text):
                text, n = entity.pattern.subn(entity.replacement, text)
                total += n
        return text, total

    def first(self, texts: Sequence[str]) -> Entity | None:
        """The first entity kind found in any of ``texts``."""
        for entity in self.entities:
            for text in texts:
                if entity.hint(text) and entity.pattern.search(text) is not None:
                    return entity
        return None


_DEFAULT = Detector(tuple(ENTITIES.values()))


def settings_problems(settings: Mapping[str, Any]) -> list[str]:
    """Problems with an inline ``pii`` object, each ``<key>: <what to fix>``."""
    out: list[str] = []
    for key in settings:
        if key not in SETTINGS_KEYS:
            out.append(f"{key}: unknown key (known: {', '.join(SETTINGS_KEYS)})")
    entities = settings.get("entities")
    if entities is not None:
        if not isinstance(entities, list) or not entities:
            out.append(
                f"entities: must be a non-empty array of {', '.join(ENTITIES)}, not {entities!r}"
            )
        else:
            for i, name in enumerate(entities):
                if name not in ENTITIES:
                    out.append(
                        f"entities[{i}]: unknown entity {name!r} (known: {', '.join(ENTITIES)})"
                    )
    action = settings.get("action")
    if action is not None and action not in ACTIONS:
        out.append(f"action: must be one of {', '.join(ACTIONS)}, not {action!r}")
    return out


def detector(settings: Mapping[str, Any]) -> Detector:
    """The detector for an inline settings object (``{}``: every entity, redact).

    Raises ``ValueError`` naming the problem when the settings are invalid (the guardrails
    plugin refuses such a config before it gets here)."""
    if not settings:
        return _DEFAULT
    problems = settings_problems(settings)
    if problems:
        raise ValueError("; ".join(problems))
    names = settings.get("entities") or list(ENTITIES)
    action = settings.get("action") or "redact"
    return Detector(tuple(ENTITIES[n] for n in dict.fromkeys(names)), action)


class PiiEvaluator:
    """Redacts (or blocks on) personal data in whatever direction it is configured."""

    def validate_settings(self, settings: Mapping[str, Any]) -> list[str]:
        """Checked by the guardrails plugin when a key's config is written or first used."""
        return settings_problems(settings)

    def evaluate_sync(self, request: GuardrailRequest) -> Verdict:
        """Judge ``request.content`` in microseconds (no I/O): the stream_chunk path."""
        found = detector(request.settings)
        texts = content_texts(request.direction, request.content)
        if found.action == "block":
            entity = found.first(texts)
            if entity is None:
                return Verdict("allow", evaluator=NAME)
            whose = "request" if request.direction == "pre" else "response"
            return Verdict(
                "block",
                f"the {whose} contains personal data ({entity.noun}); this key does not let "
                "personal data through — remove it and try again",
                NAME,
            )
        redacted: list[str] = []
        count = 0
        for text in texts:
            new, n = found.redact(text)
            redacted.append(new)
            count += n
        if not count:
            return Verdict("allow", evaluator=NAME)
        return Verdict(
            "modify",
            f"redacted {count} item(s) of personal data",
            NAME,
            with_texts(request.direction, request.content, redacted),
        )

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        return self.evaluate_sync(request)


@hookimpl
def register_guardrail_evaluators(register: Callable[[str, Any], None]) -> None:
    register(NAME, PiiEvaluator())
