"""Compiling and judging ``policy_rules`` (SPEC §4): RE2 deny/allow lists per dimension.

Semantics, per dimension (``tools``, ``mcp``, ``urls``, ``models``):

* **deny first** — a candidate any of whose forms a deny pattern matches is refused;
* then, when the dimension has a non-empty ``allow`` list, every candidate must have a form
  that some allow pattern matches.

Patterns use RE2 *search* semantics (Go's ``regexp.MatchString``, as the reference product):
``exec`` matches ``functions.exec`` and ``exec_command``; anchor with ``^…$`` for an exact name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import re2

from tollway import quote_input
from tollway.config import json_type
from tollway_policy_rules._extract import Candidate, Candidates, extract
from tollway_policy_rules._urls import canonical_forms

__all__ = [
    "DIMENSIONS",
    "CompiledRules",
    "Dimension",
    "PolicyProblem",
    "Refusal",
    "compile_rules",
    "problems",
    "validate_policy_rules",
]

#: The dimensions of ``policy_rules``, in the order a request is judged (cheapest first).
DIMENSIONS = ("models", "tools", "mcp", "urls")
_LISTS = ("deny", "allow")

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are reported by us, with the path, not by absl on stderr


@attrs.frozen
class PolicyProblem:
    """Something wrong in a ``policy_rules`` value: where, and what."""

    path: str
    message: str
    dimension: str | None = None
    pattern: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@attrs.frozen
class Refusal:
    """Why a request was refused: the dimension, the candidate, the list and the pattern."""

    dimension: str
    value: str
    forms: tuple[str, ...]
    list: Literal["deny", "allow"]
    #: The deny pattern that matched (``None`` for an allow-list miss).
    pattern: str | None
    #: The dimension's allow patterns (for the message on an allow-list miss).
    allow: tuple[str, ...] = ()


@attrs.frozen
class Dimension:
    """One dimension's compiled lists. A ``None`` set means the list is absent or empty."""

    name: str
    deny: tuple[str, ...]
    allow: tuple[str, ...]
    deny_set: Any = attrs.field(eq=False, repr=False)
    allow_set: Any = attrs.field(eq=False, repr=False)

    def judge(self, forms: Candidate) -> Refusal | None:
        """One candidate: deny first (any form, any pattern), then the allow list (some form,
        some pattern)."""
        return self.judge_deny(forms) or self.judge_allow(forms)

    def judge_all(self, candidates: Sequence[Candidate]) -> Refusal | None:
        """Every candidate against the deny list, then every candidate against the allow list,
        so a deny hit is reported before an allow-list miss."""
        if self.deny_set is not None:
            for forms in candidates:
                refusal = self.judge_deny(forms)
                if refusal is not None:
                    return refusal
        if self.allow_set is not None:
            for forms in candidates:
                refusal = self.judge_allow(forms)
                if refusal is not None:
                    return refusal
        return None

    def judge_deny(self, forms: Candidate) -> Refusal | None:
        """The first deny pattern (in list order) that matches any form, as a refusal."""
        deny_set = self.deny_set
        if deny_set is None:
            return None
        first: int | None = None
        for form in forms:
            hits = deny_set.Match(form)
            if hits:
                low = min(hits)
                first = low if first is None else min(first, low)
        if first is None:
            return None
        return Refusal(self.name, forms[0], forms, "deny", self.deny[first])

    def judge_allow(self, forms: Candidate) -> Refusal | None:
        """A refusal when the dimension has an allow list and no pattern matches any form."""
        allow_set = self.allow_set
        if allow_set is None:
            return None
        for form in forms:
            if allow_set.Match(form):
                return None
        return Refusal(self.name, forms[0], forms, "allow", None, self.allow)


@attrs.frozen
class CompiledRules:
    """A key's ``policy_rules``, compiled once: the active dimensions, or what is broken."""

    models: Dimension | None = None
    tools: Dimension | None = None
    mcp: Dimension | None = None
    urls: Dimension | None = None
    #: The first problem found; when set the gateway fails closed (503 policy_rules_broken).
    broken: PolicyProblem | None = None

    @property
    def active(self) -> bool:
        return any(d is not None for d in (self.models, self.tools, self.mcp, self.urls))

    def evaluate(self, body: Mapping[str, Any], model: str) -> Refusal | None:
        """Judge one request (the parsed body and the model as requested)."""
        if self.models is not None:
            refusal = self.models.judge_all(((model,),))
            if refusal is not None:
                return refusal
        tools, mcp, urls = self.tools, self.mcp, self.urls
        if tools is None and mcp is None and urls is None:
            return None
        found: Candidates = extract(
            body, tools=tools is not None, mcp=mcp is not None, urls=urls is not None
        )
        if tools is not None and found.tools:
            refusal = tools.judge_all(found.tools)
            if refusal is not None:
                return refusal
        if mcp is not None and found.mcp:
            refusal = mcp.judge_all([(m,) for m in found.mcp])
            if refusal is not None:
                return refusal
        if urls is not None and found.urls:
            return _judge_urls(urls, found.urls)
        return None


def _judge_urls(urls: Dimension, found: Sequence[str]) -> Refusal | None:
    """URLs by their canonical forms (:mod:`._urls`): deny patterns see the URL as sent and
    its canonical forms, allow patterns only the canonical forms. Every URL is judged against
    the deny list first, as :meth:`Dimension.judge_all` does."""
    judged = [(url, canonical_forms(url)) for url in found]
    if urls.deny_set is not None:
        for url, canon in judged:
            refusal = urls.judge_deny(canon if canon[0] == url else (url, *canon))
            if refusal is not None:
                return refusal
    if urls.allow_set is not None:
        for url, canon in judged:
            refusal = urls.judge_allow(canon)
            if refusal is not None:
                forms = canon if canon[0] == url else (url, *canon)
                return attrs.evolve(refusal, value=url, forms=forms)
    return None


def _re2_error(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else str(exc)
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return str(detail)


def _compile_list(
    dimension: str, which: str, value: Any, out: list[PolicyProblem]
) -> tuple[tuple[str, ...], Any]:
    path = f"policy_rules.{dimension}.{which}"
    if value is None:
        return (), None
    if not isinstance(value, list | tuple):
        out.append(
            PolicyProblem(
                path,
                f"must be a list of RE2 patterns or null, not {json_type(value)}",
                dimension,
            )
        )
        return (), None
    patterns: list[str] = []
    ok = True
    for i, pattern in enumerate(value):
        if not isinstance(pattern, str):
            out.append(
                PolicyProblem(
                    f"{path}[{i}]",
                    f"must be a string (an RE2 pattern), not {json_type(pattern)}",
                    dimension,
                )
            )
            ok = False
            continue
        try:
            re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            out.append(
                PolicyProblem(
                    f"{path}[{i}]",
                    f"pattern {_quote(pattern)} is not valid RE2 ({_re2_error(exc)}); RE2 has no "
                    "backreferences or look-around, and literal ( ) [ need a backslash",
                    dimension,
                    pattern,
                )
            )
            ok = False
            continue
        patterns.append(pattern)
    if not ok or not patterns:
        return tuple(patterns), None
    pattern_set = re2.Set.SearchSet(_OPTIONS)
    for pattern in patterns:
        pattern_set.Add(pattern)
    try:
        pattern_set.Compile()
    except re2.error as exc:  # e.g. the combined automaton is over RE2's memory budget
        out.append(
            PolicyProblem(
                path,
                f"the patterns do not compile together ({_re2_error(exc)}); use fewer or "
                "simpler patterns",
                dimension,
                patterns[0],
            )
        )
        return tuple(patterns), None
    return tuple(patterns), pattern_set


def _compile(rules: Any) -> tuple[CompiledRules, list[PolicyProblem]]:
    out: list[PolicyProblem] = []
    if rules is None:
        return CompiledRules(), out
    if not isinstance(rules, Mapping):
        out.append(
            PolicyProblem(
                "policy_rules",
                f"must be an object with tools, mcp, urls and/or models, not {json_type(rules)}",
            )
        )
        return CompiledRules(broken=out[0]), out
    dims: dict[str, Dimension] = {}
    for name, spec in rules.items():
        if name not in DIMENSIONS:
            out.append(
                PolicyProblem(
                    f"policy_rules.{name}",
                    "unknown dimension; policy_rules has tools, mcp, urls and models",
                    str(name),
                )
            )
            continue
        if spec is None:
            continue
        if not isinstance(spec, Mapping):
            out.append(
                PolicyProblem(
                    f"policy_rules.{name}",
                    f"must be an object with deny and/or allow lists, not {json_type(spec)}",
                    name,
                )
            )
            continue
        for key in spec:
            if key not in _LISTS:
                out.append(
                    PolicyProblem(
                        f"policy_rules.{name}.{key}",
                        "unknown list; a dimension has deny and allow",
                        name,
                    )
                )
        deny, deny_set = _compile_list(name, "deny", spec.get("deny"), out)
        allow, allow_set = _compile_list(name, "allow", spec.get("allow"), out)
        if deny_set is not None or allow_set is not None:
            dims[name] = Dimension(name, deny, allow, deny_set, allow_set)
    if out:
        return CompiledRules(broken=out[0]), out
    return (
        CompiledRules(
            models=dims.get("models"),
            tools=dims.get("tools"),
            mcp=dims.get("mcp"),
            urls=dims.get("urls"),
        ),
        out,
    )


def compile_rules(rules: Any) -> CompiledRules:
    """Compile a ``policy_rules`` value (the object under the key config's ``policy_rules``).

    Never raises: a value that is not a valid policy comes back with ``broken`` set to the first
    problem, and the gateway fails closed on it.
    """
    return _compile(rules)[0]


def problems(rules: Any) -> list[PolicyProblem]:
    """Every problem in a ``policy_rules`` value, each with its JSON path."""
    return _compile(rules)[1]


def validate_policy_rules(config: Any) -> list[str]:
    """Write-time validation for the control plane: the errors in a key config's
    ``policy_rules``, each ``"<JSON path>: <what is wrong>"`` and naming a broken pattern.

    ``config`` is the whole key config (``--config-json``); other fields are not looked at. An
    empty list means the value is valid (or absent).
    """
    if not isinstance(config, Mapping):
        return [f"config: must be an object, not {json_type(config)}"]
    return [str(p) for p in problems(config.get("policy_rules"))]


def _quote(value: str, limit: int = 200) -> str:
    """A value as a JSON string for messages and log lines, cut to ``limit`` characters."""
    return quote_input(value, limit)
