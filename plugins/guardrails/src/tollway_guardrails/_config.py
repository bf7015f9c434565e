"""A key's ``guardrails`` config: validation on write, and the compiled plan the gateway runs.

Shape (SPEC §6)::

    {"pre": [E, …], "post": [E, …], "stream_chunk": [E, …],
     "fail_open": {"pre": false, "post": false}}

where each ``E`` is a registered evaluator name (``"pii"``) or an inline object naming one with
its settings (``{"evaluator": "webhook", "url": "https://…", "timeout_ms": 2000,
"secret": "…"}``). ``timeout_ms`` is understood for every evaluator (how long ``pre`` and
``post`` wait for it); the rest of the object is the evaluator's own settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from tollway.config import json_type
from tollway.guardrails import DIRECTIONS, Direction
from tollway_guardrails._webhook import validate_webhook_settings

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "MAX_TIMEOUT_MS",
    "EvaluatorRef",
    "Plan",
    "compile_plan",
    "validate_guardrails_config",
]

DEFAULT_TIMEOUT_MS = 2000
MAX_TIMEOUT_MS = 60_000
_KEYS = (*DIRECTIONS, "fail_open")
_FAIL_OPEN_KEYS = ("pre", "post")


def _installed_text(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed) if listed else "none"


def timeout_problem(value: Any) -> str | None:
    """Why an inline ``timeout_ms`` is unusable, or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMEOUT_MS:
        return (
            f"must be a whole number of milliseconds between 1 and {MAX_TIMEOUT_MS}, not {value!r}"
        )
    return None


def _evaluator_problems(
    path: str,
    item: Any,
    installed: Mapping[str, Any] | frozenset[str],
    validators: Mapping[str, Callable[[Mapping[str, Any]], list[str]]],
) -> list[str]:
    """Problems with one entry of a direction's list, each prefixed with its path."""
    name: Any
    if isinstance(item, str):
        if not item:
            return [f"{path}: an evaluator name cannot be empty"]
        name, settings = item, None
    elif isinstance(item, Mapping):
        name = item.get("evaluator")
        if not isinstance(name, str) or not name:
            return [
                f"{path}.evaluator: an inline evaluator object needs 'evaluator' (the "
                f'evaluator\'s name, e.g. "webhook"), not {json_type(name)}'
            ]
        settings = item
    else:
        return [
            f'{path}: must be an evaluator name or an object {{"evaluator": …, settings…}}, '
            f"not {json_type(item)}"
        ]
    if name not in installed:
        return [
            f"{path}: no guardrail evaluator named {name!r} is installed "
            f"(installed: {_installed_text(installed)})"
        ]
    out: list[str] = []
    validate = validators.get(name)
    if validate is None and isinstance(installed, Mapping):
        validate = getattr(installed[name], "validate_settings", None)
    if settings is not None:
        problem = timeout_problem(settings.get("timeout_ms"))
        if problem is not None:
            out.append(f"{path}.timeout_ms: {problem}")
    if validate is not None:
        for line in validate(settings if settings is not None else {}):
            out.append(f"{path}.{line}")
    return out


def validate_guardrails_config(
    config: Any,
    installed_names: Iterable[str] | Mapping[str, Any],
    *,
    validators: Mapping[str, Callable[[Mapping[str, Any]], list[str]]] | None = None,
) -> list[str]:
    """Problems with a key's ``guardrails`` config, each ``<path>: <what to fix>``; ``[]`` when
    it is valid.

    ``installed_names``: the evaluator names this deployment has (collect them with the
    ``register_guardrail_evaluators`` hook). Pass a mapping of name → evaluator to check
    inline settings too, with each evaluator's optional ``validate_settings``. The built-in
    ``webhook`` evaluator's settings are always checked. ``null`` anywhere means "off".
    """
    if config is None:
        return []
    installed: Mapping[str, Any] | frozenset[str] = (
        installed_names if isinstance(installed_names, Mapping) else frozenset(installed_names)
    )
    checks = {"webhook": validate_webhook_settings, **(validators or {})}
    if not isinstance(config, Mapping):
        return [
            "guardrails: must be an object with pre, post, stream_chunk, fail_open, not "
            f"{json_type(config)}"
        ]
    out: list[str] = []
    for key in config:
        if key not in _KEYS:
            out.append(f"guardrails.{key}: unknown key (known: {', '.join(_KEYS)})")
    for direction in DIRECTIONS:
        value = config.get(direction)
        path = f"guardrails.{direction}"
        if value is None:
            continue
        if not isinstance(value, list):
            out.append(f"{path}: must be an array of evaluators or null, not {json_type(value)}")
            continue
        for i, item in enumerate(value):
            out.extend(_evaluator_problems(f"{path}[{i}]", item, installed, checks))
    fail_open = config.get("fail_open")
    if fail_open is not None:
        if not isinstance(fail_open, Mapping):
            out.append(
                'guardrails.fail_open: must be an object like {"pre": false, "post": false}, '
                f"not {json_type(fail_open)}"
            )
        else:
            for key, value in fail_open.items():
                path = f"guardrails.fail_open.{key}"
                if key == "stream_chunk":
                    out.append(
                        f"{path}: stream_chunk guardrails always fail open (their 50 ms budget "
                        "is fail-open by contract); remove this key"
                    )
                elif key not in _FAIL_OPEN_KEYS:
                    out.append(f"{path}: unknown key (known: pre, post)")
                elif value is not None and not isinstance(value, bool):
                    out.append(f"{path}: must be true, false or null, not {json_type(value)}")
    return out


# --------------------------------------------------------------------------------------------
# The compiled plan
# --------------------------------------------------------------------------------------------


@attrs.frozen
class EvaluatorRef:
    """One evaluator as a key's config uses it in one direction."""

    #: The registered name (``"pii"``, ``"webhook"``).
    name: str
    #: Where it is configured, for messages: ``guardrails.pre[1]``.
    path: str
    #: The evaluator object, or ``None`` when it cannot run (see ``problem``).
    evaluator: Any
    #: The inline object (``{}`` for a plain name).
    settings: Mapping[str, Any]
    timeout_s: float
    #: ``evaluator.evaluate_sync`` when the evaluator has one.
    sync: Callable[..., Any] | None = None
    #: Why this entry cannot run (not installed, bad settings); it then fails like an
    #: unreachable evaluator.
    problem: str | None = None


@attrs.frozen
class Plan:
    """A key's guardrails, resolved against the installed evaluators."""

    pre: tuple[EvaluatorRef, ...] = ()
    post: tuple[EvaluatorRef, ...] = ()
    stream_chunk: tuple[EvaluatorRef, ...] = ()
    fail_open_pre: bool = False
    fail_open_post: bool = False

    def refs(self, direction: Direction) -> tuple[EvaluatorRef, ...]:
        refs: tuple[EvaluatorRef, ...] = getattr(self, direction)
        return refs

    def fail_open(self, direction: Direction) -> bool:
        if direction == "stream_chunk":
            return True
        return self.fail_open_pre if direction == "pre" else self.fail_open_post


EMPTY_PLAN = Plan()


def _ref(
    path: str,
    item: Any,
    registry: Mapping[str, Any],
    default_timeout_ms: int,
) -> EvaluatorRef:
    settings: Mapping[str, Any] = item if isinstance(item, Mapping) else {}
    raw_name = item if isinstance(item, str) else settings.get("evaluator")
    name = raw_name if isinstance(raw_name, str) else "?"
    problems = _evaluator_problems(path, item, registry, {})
    timeout_ms = settings.get("timeout_ms")
    if timeout_problem(timeout_ms) is not None or timeout_ms is None:
        timeout_ms = default_timeout_ms
    if problems:
        return EvaluatorRef(
            name,
            path,
            None,
            settings,
            timeout_ms / 1000,
            problem="the key's guardrails config is invalid: " + "; ".join(problems),
        )
    evaluator = registry[name]
    sync = getattr(evaluator, "evaluate_sync", None)
    return EvaluatorRef(
        name,
        path,
        evaluator,
        settings,
        timeout_ms / 1000,
        sync=sync if callable(sync) else None,
    )


def compile_plan(config: Any, registry: Mapping[str, Any], default_timeout_ms: int) -> Plan:
    """Resolve a key's ``guardrails`` config against the installed evaluators.

    Never raises: an entry that cannot run (unknown evaluator, bad settings, a direction that
    is not a list) becomes an :class:`EvaluatorRef` with a ``problem``, which then fails like an
    unreachable evaluator — closed unless the direction fails open.
    """
    if not isinstance(config, Mapping):
        return EMPTY_PLAN
    lists: dict[str, tuple[EvaluatorRef, ...]] = {}
    for direction in DIRECTIONS:
        value = config.get(direction)
        path = f"guardrails.{direction}"
        if value is None:
            lists[direction] = ()
        elif not isinstance(value, list):
            problem = (
                f"the key's guardrails config is invalid: {path}: must be an array of "
                f"evaluators, not {json_type(value)}"
            )
            lists[direction] = (
                EvaluatorRef("?", path, None, {}, default_timeout_ms / 1000, problem=problem),
            )
        else:
            lists[direction] = tuple(
                _ref(f"{path}[{i}]", item, registry, default_timeout_ms)
                for i, item in enumerate(value)
            )
    fail_open = config.get("fail_open")
    fo = fail_open if isinstance(fail_open, Mapping) else {}
    return Plan(
        pre=lists["pre"],
        post=lists["post"],
        stream_chunk=lists["stream_chunk"],
        fail_open_pre=fo.get("pre") is True,
        fail_open_post=fo.get("post") is True,
    )
