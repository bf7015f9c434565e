"""A virtual key's config (SPEC §3 ``--config-json``): validation on write and merge on update.

Every problem is reported as ``<json path>: <what is wrong and what to write instead>``, e.g.
``policy_rules.tools.deny[1]: pattern '(?<=x)' is not valid RE2 (…)``. Unknown keys are refused
at every level, except top-level sections named after an installed plugin that registered
settings (a plugin's own per-key section).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import re2

from tollway.config import json_type
from tollway.outbound import ALLOW_CIDRS_ENV, OutboundPolicy

__all__ = ["KNOWN_KEYS", "merge_patch", "validate_key_config"]

KNOWN_KEYS = (
    "models_allowed",
    "model_aliases",
    "rate_limits",
    "cache",
    "response_cache",
    "policy_rules",
    "guardrails",
    "fallback",
    "tags",
)
_RATE_LIMITS = ("rpm", "rpd", "tpm")
_CACHE_MODES = ("respect", "disable", "force")
_POLICY_DIMENSIONS = ("tools", "mcp", "urls", "models")
_POLICY_LISTS = ("deny", "allow")
_GUARDRAIL_DIRECTIONS = ("pre", "post", "stream_chunk")

_WEBHOOK_HINT = f"a webhook on your own network needs its network in {ALLOW_CIDRS_ENV}"

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` removes a field, any other
    value (lists included) replaces it. Returns a new value; the inputs are not modified."""
    if not isinstance(patch, Mapping):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def obj(self, path: str, value: Any, known: Iterable[str]) -> Mapping[str, Any] | None:
        """``value`` must be null or an object with only ``known`` keys."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.add(path, f"must be an object or null, not {json_type(value)}")
            return None
        known = tuple(known)
        for key in value:
            if key not in known:
                self.add(f"{path}.{key}", f"unknown key (known: {', '.join(known)})")
        return value

    def str_list(self, path: str, value: Any, what: str = "a non-empty string") -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(path, f"must be an array of strings or null, not {json_type(value)}")
            return []
        good: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.add(f"{path}[{i}]", f"must be {what}, not {json_type(item)}")
            elif not item:
                self.add(f"{path}[{i}]", f"must be {what}, not an empty string")
            else:
                good.append(item)
        return good

    def positive_int(self, path: str, value: Any, *, minimum: int = 1, what: str = "") -> None:
        if value is None:
            return
        if not _is_int(value) or value < minimum:
            shown = repr(value) if _is_int(value) else json_type(value)
            self.add(
                path,
                f"must be an integer >= {minimum}{what} or null, not {shown}",
            )

    def boolean(self, path: str, value: Any) -> None:
        if value is not None and not isinstance(value, bool):
            self.add(path, f"must be true, false or null, not {json_type(value)}")


def validate_key_config(
    config: Any,
    plugin_sections: Callable[[], Iterable[str]] | None = None,
    *,
    outbound: OutboundPolicy | None = None,
) -> list[str]:
    """Every problem in ``config``, one line each with its path (empty: valid).

    ``plugin_sections`` returns the names of installed plugins' settings sections, accepted as
    extra top-level keys; it is only called when an unknown top-level key is found.
    ``outbound``: the SSRF guard the ``url`` of every ``webhook`` guardrail must pass (user info
    is refused in any case).
    """
    outbound = outbound or OutboundPolicy()
    c = _Checker()
    if not isinstance(config, Mapping):
        return [f"config: must be a JSON object, not {json_type(config)}"]
    extra: set[str] | None = None
    for key, value in config.items():
        if key in KNOWN_KEYS:
            continue
        if extra is None:
            extra = set(plugin_sections()) if plugin_sections is not None else set()
        if key in extra:
            if value is not None and not isinstance(value, Mapping):
                c.add(key, f"a plugin's section must be an object or null, not {json_type(value)}")
            continue
        known = ", ".join((*KNOWN_KEYS, *sorted(extra)))
        c.add(key, f"unknown key (known: {known})")

    for i, pattern in enumerate(
        c.str_list("models_allowed", config.get("models_allowed"), "a model id or glob")
    ):
        star = pattern.find("*")
        if star != -1 and star != len(pattern) - 1:
            c.add(
                f"models_allowed[{i}]",
                f"{pattern!r}: '*' is only allowed at the end (a trailing glob like 'gpt-4o*')",
            )

    aliases = config.get("model_aliases")
    if aliases is not None:
        if not isinstance(aliases, Mapping):
            c.add(
                "model_aliases",
                f"must be an object (alias → model) or null, not {json_type(aliases)}",
            )
        else:
            for alias, target in aliases.items():
                if not alias:
                    c.add("model_aliases", "an alias must not be empty")
                if not isinstance(target, str) or not target:
                    c.add(
                        f"model_aliases.{alias}",
                        "must be the model id to use (a non-empty string), "
                        f"not {json_type(target)}",
                    )

    limits = c.obj("rate_limits", config.get("rate_limits"), _RATE_LIMITS)
    if limits is not None:
        for name in _RATE_LIMITS:
            c.positive_int(f"rate_limits.{name}", limits.get(name), what=" (null: no limit)")

    cache = c.obj("cache", config.get("cache"), ("mode", "ttl_s"))
    if cache is not None:
        mode = cache.get("mode")
        if mode is not None and mode not in _CACHE_MODES:
            shown = repr(mode) if isinstance(mode, str) else json_type(mode)
            c.add("cache.mode", f"must be one of {', '.join(_CACHE_MODES)}, not {shown}")
        c.positive_int("cache.ttl_s", cache.get("ttl_s"), minimum=0, what=" (seconds)")

    response_cache = c.obj("response_cache", config.get("response_cache"), ("ttl_s",))
    if response_cache is not None:
        c.positive_int("response_cache.ttl_s", response_cache.get("ttl_s"), what=" (seconds)")

    rules = c.obj("policy_rules", config.get("policy_rules"), _POLICY_DIMENSIONS)
    if rules is not None:
        for dim in _POLICY_DIMENSIONS:
            lists = c.obj(f"policy_rules.{dim}", rules.get(dim), _POLICY_LISTS)
            if lists is None:
                continue
            for which in _POLICY_LISTS:
                path = f"policy_rules.{dim}.{which}"
                value = lists.get(which)
                if value is not None and not isinstance(value, list):
                    c.add(path, f"must be an array of RE2 patterns or null, not {json_type(value)}")
                    continue
                for i, pattern in enumerate(value or ()):
                    if not isinstance(pattern, str):
                        c.add(
                            f"{path}[{i}]",
                            f"must be a string (an RE2 pattern), not {json_type(pattern)}",
                        )
                        continue
                    try:
                        re2.compile(pattern, _RE2_OPTIONS)
                    except re2.error as exc:
                        detail = exc.args[0] if exc.args else str(exc)
                        if isinstance(detail, bytes):
                            detail = detail.decode("utf-8", "replace")
                        c.add(
                            f"{path}[{i}]",
                            f"pattern {pattern!r} is not valid RE2 ({detail}); RE2 has no "
                            "backreferences or look-around, and literal ( ) [ need a backslash",
                        )

    guardrails = c.obj(
        "guardrails", config.get("guardrails"), (*_GUARDRAIL_DIRECTIONS, "fail_open")
    )
    if guardrails is not None:
        for direction in _GUARDRAIL_DIRECTIONS:
            path = f"guardrails.{direction}"
            value = guardrails.get(direction)
            if value is None:
                continue
            if not isinstance(value, list):
                c.add(path, f"must be an array of evaluators or null, not {json_type(value)}")
                continue
            for i, item in enumerate(value):
                if isinstance(item, str) and item:
                    continue
                if isinstance(item, Mapping):
                    evaluator = item.get("evaluator")
                    if not isinstance(evaluator, str) or not evaluator:
                        c.add(
                            f"{path}[{i}].evaluator",
                            "an inline evaluator object needs 'evaluator' (the evaluator's "
                            f'name, e.g. "webhook"), not {json_type(evaluator)}',
                        )
                    url = item.get("url")
                    if evaluator == "webhook" and isinstance(url, str) and url:
                        problem = outbound.url_problem(url, hint=_WEBHOOK_HINT)
                        if problem is not None:
                            c.add(f"{path}[{i}].url", problem)
                    continue
                c.add(
                    f"{path}[{i}]",
                    'must be an evaluator name or an object {"evaluator": …, settings…}, '
                    f"not {json_type(item)}",
                )
        fail_open = c.obj("guardrails.fail_open", guardrails.get("fail_open"), ("pre", "post"))
        if fail_open is not None:
            for direction in ("pre", "post"):
                c.boolean(f"guardrails.fail_open.{direction}", fail_open.get(direction))

    fallback = c.obj("fallback", config.get("fallback"), ("max_attempts",))
    if fallback is not None:
        c.positive_int("fallback.max_attempts", fallback.get("max_attempts"))

    tags = config.get("tags")
    if isinstance(tags, Mapping):
        for name, value in tags.items():
            if not isinstance(value, str):
                c.add(f"tags.{name}", f"a tag value must be a string, not {json_type(value)}")
    elif tags is not None and not isinstance(tags, list):
        c.add("tags", f"must be an array of tags or an object of tag values, not {json_type(tags)}")
    else:
        c.str_list("tags", tags, "a non-empty string (a tag)")

    return c.problems
