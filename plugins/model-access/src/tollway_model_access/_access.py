"""``models_allowed`` and ``model_aliases``: validation, compiled matchers and the per-key cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from tollway.config import json_type

__all__ = ["AccessCache", "ModelAccess", "compile_access", "glob_matches", "validate_config"]


def glob_matches(rule: str, model: str) -> bool:
    """One ``models_allowed`` entry against one model id: exact, or a trailing-``*`` prefix."""
    if rule.endswith("*"):
        return model.startswith(rule[:-1])
    return model == rule


def validate_config(config: Any) -> list[str]:
    """Write-time validation of a key config's ``models_allowed`` and ``model_aliases``.

    Returns ``"<JSON path>: <what is wrong>"`` errors; an empty list means both fields are valid
    (or absent). Other fields of ``config`` are not looked at.

    * ``models_allowed``: ``null`` (every model) or a list of non-empty model ids, each exact or
      ending in one ``*`` (a prefix glob; ``*`` elsewhere is refused).
    * ``model_aliases``: ``null`` or an object mapping alias → model id (non-empty strings). An
      alias resolves once: a target that is itself an alias is refused.
    """
    return _problems(config, strict=True)


def _problems(config: Any, *, strict: bool) -> list[str]:
    """``strict``: everything :func:`validate_config` refuses. Otherwise only what would make the
    gateway misbehave (wrong types, empty alias targets): the request-time check, which trusts
    the control plane's write-time validation for the rest (a mid-``*`` entry then matches only
    itself literally, a chained alias resolves one hop)."""
    if not isinstance(config, Mapping):
        return [f"config: must be an object, not {json_type(config)}"]
    errors: list[str] = []
    allowed = config.get("models_allowed")
    if allowed is not None:
        if not isinstance(allowed, list | tuple):
            errors.append(
                "models_allowed: must be null (every model) or a list of model ids and "
                f"trailing-* globs, not {json_type(allowed)}"
            )
        else:
            for i, rule in enumerate(allowed):
                path = f"models_allowed[{i}]"
                if not isinstance(rule, str):
                    errors.append(f"{path}: must be a model id (a string), not {json_type(rule)}")
                elif strict and not rule:
                    errors.append(f"{path}: must not be empty")
                elif strict and "*" in rule[:-1]:
                    errors.append(
                        f'{path}: "{rule}" has a * before its end; only a trailing * is a glob '
                        '(e.g. "gpt-4o*")'
                    )
    aliases = config.get("model_aliases")
    if aliases is not None:
        if not isinstance(aliases, Mapping):
            errors.append(
                "model_aliases: must be null or an object mapping alias to model id, not "
                f"{json_type(aliases)}"
            )
        else:
            for alias, target in aliases.items():
                path = f"model_aliases.{alias}"
                if not isinstance(alias, str) or not alias:
                    errors.append(f"model_aliases: alias {alias!r} must be a non-empty string")
                elif not isinstance(target, str):
                    errors.append(f"{path}: must be a model id (a string), not {json_type(target)}")
                elif not target:
                    errors.append(f"{path}: must not be empty")
                elif strict and target != alias and target in aliases:
                    errors.append(
                        f'{path}: "{target}" is itself an alias; aliases resolve once, so '
                        f"point {alias} at the model {target} stands for"
                    )
    return errors


@attrs.frozen
class ModelAccess:
    """One key's compiled model policy."""

    #: alias → model (only entries that change the model).
    aliases: Mapping[str, str] = attrs.field(factory=dict)
    #: ``models_allowed`` as configured; ``None`` = every model.
    rules: tuple[str, ...] | None = None
    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    #: Non-empty when the config is invalid (the gateway answers 503 ``key_config_invalid``).
    problems: tuple[str, ...] = ()

    def allows(self, model: str) -> bool:
        """Whether ``models_allowed`` lets ``model`` through (a set lookup + a prefix check)."""
        if self.rules is None:
            return True
        return model in self.exact or model.startswith(self.prefixes)

    def resolve(self, model: str) -> str:
        """The model an alias stands for (one hop), or ``model`` itself."""
        return self.aliases.get(model, model)


def compile_access(config: Mapping[str, Any]) -> ModelAccess:
    """Compile a key config's ``models_allowed`` / ``model_aliases``; never raises."""
    problems = _problems(config, strict=False)
    if problems:
        return ModelAccess(problems=tuple(problems))
    raw_aliases = config.get("model_aliases") or {}
    aliases = {a: t for a, t in raw_aliases.items() if a != t}
    allowed = config.get("models_allowed")
    if allowed is None:
        return ModelAccess(aliases=aliases)
    rules = tuple(allowed)
    return ModelAccess(
        aliases=aliases,
        rules=rules,
        exact=frozenset(r for r in rules if not r.endswith("*")),
        prefixes=tuple(r[:-1] for r in rules if r.endswith("*")),
    )


class AccessCache:
    """Compiled :class:`ModelAccess` per key-config object (bounded, FIFO).

    Keyed by ``id(config)``; each entry keeps the config object alive and is used only when it
    is the very same object, so a recycled id can never return another key's policy. Key
    configs are read-only (``Principal.config``): a changed key arrives as a new object.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[int, tuple[Mapping[str, Any], ModelAccess]] = {}

    def get(self, config: Mapping[str, Any]) -> ModelAccess:
        entry = self._entries.get(id(config))
        if entry is not None and entry[0] is config:
            return entry[1]
        access = compile_access(config)
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[id(config)] = (config, access)
        return access

    def __len__(self) -> int:
        return len(self._entries)
