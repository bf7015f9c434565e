"""Per-key policy rules (SPEC §4): RE2 deny/allow lists on tools, MCP servers, URLs and models.

The key config's ``policy_rules``::

    {"tools":  {"deny": ["^Bash$"], "allow": ["^(Read|Write|Edit)$"]},
     "mcp":    {"deny": ["^untrusted-"]},
     "urls":   {"deny": ["(?i)://([^/]*\\.)?evil\\.example(/|$)"]},
     "models": {"allow": ["^gpt-4o", "^claude-"]}}

is judged in the ``admit`` hook, after rate limits and before model access (aliases,
``models_allowed``). Refusals are 403 ``tool_not_allowed`` (tools, mcp, urls) or 403
``model_not_allowed`` with code ``policy_rules`` (models). A policy that does not compile fails
closed: 503 ``service_unavailable`` code ``policy_rules_broken``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from tollway import (
    GatewayError,
    ModelNotAllowed,
    Principal,
    RequestContext,
    ServiceUnavailable,
    Stash,
    StashKey,
    ToolNotAllowed,
    hookimpl,
)
from tollway_policy_rules._extract import (
    UNNAMED_MCP_SERVER,
    Candidate,
    Candidates,
    extract,
    mcp_candidates,
    tool_candidates,
    url_candidates,
)
from tollway_policy_rules._rules import (
    DIMENSIONS,
    CompiledRules,
    Dimension,
    PolicyProblem,
    Refusal,
    _quote,
    compile_rules,
    problems,
    validate_policy_rules,
)

__all__ = [
    "BROKEN_RETRY_AFTER",
    "DIMENSIONS",
    "UNNAMED_MCP_SERVER",
    "Candidate",
    "Candidates",
    "CompiledRules",
    "Dimension",
    "PolicyProblem",
    "Refusal",
    "RulesCache",
    "broken_error",
    "compile_rules",
    "extract",
    "mcp_candidates",
    "problems",
    "refusal_error",
    "tool_candidates",
    "url_candidates",
    "validate_policy_rules",
]

log = logging.getLogger("tollway.policy_rules")

#: Seconds in ``Retry-After`` on a broken policy. Over 60, so the core adds
#: ``x-should-retry: false``: a retry cannot help until an operator fixes the key.
BROKEN_RETRY_AFTER = 300
_NOUNS = {"tools": "tool", "mcp": "MCP server", "urls": "URL", "models": "model"}
_CODES = {"tools": "tool_not_allowed", "mcp": "mcp_not_allowed", "urls": "url_not_allowed"}
_SHOWN_PATTERNS = 5


class RulesCache:
    """Compiled policies by the canonical JSON of their ``policy_rules`` (bounded, FIFO).

    One per gateway (on ``gateway.stash``). A compile failure is logged once per distinct
    policy, when it is compiled.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[bytes, CompiledRules] = {}

    def get(self, rules: Any, key_id: str = "-") -> CompiledRules:
        try:
            key = orjson.dumps(rules, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        except TypeError:
            key = repr(rules).encode()
        compiled = self._entries.get(key)
        if compiled is None:
            compiled = compile_rules(rules)
            if compiled.broken is not None:
                problem = compiled.broken
                log.warning(
                    "policy_rules_compile_failed dimension=%s pattern=%s path=%s key_id=%s "
                    "error=%s",
                    problem.dimension or "-",
                    _quote(problem.pattern) if problem.pattern is not None else "-",
                    problem.path,
                    key_id,
                    problem.message,
                    extra=_log_fields(problem, key_id),
                )
            if len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = compiled
        return compiled

    def __len__(self) -> int:
        return len(self._entries)


def _log_fields(problem: PolicyProblem, key_id: str) -> dict[str, Any]:
    """Structured fields for the JSON log line (beside the human-readable message)."""
    return {
        "dimension": problem.dimension,
        "pattern": problem.pattern,
        "path": problem.path,
        "key_id": key_id,
    }


_CACHE: StashKey[RulesCache] = StashKey("policy-rules.cache")
#: A key's compiled rules, kept on its principal (``Principal.derive``).
_COMPILED: StashKey[CompiledRules] = StashKey("policy-rules.compiled")


def _cache(gateway: Any) -> RulesCache:
    stash: Stash | None = getattr(gateway, "stash", None)
    if stash is None:  # a context built without a gateway (unit tests)
        return RulesCache(1)
    cache = stash.get(_CACHE)
    if cache is None:
        cache = stash.setdefault(_CACHE, RulesCache())
    return cache


@hookimpl(phase="policy")
def admit(ctx: RequestContext) -> None:
    """Judge the request against the key's ``policy_rules`` (no-op without them)."""
    principal = ctx.principal
    if principal is None:
        return
    if not principal.config.get("policy_rules"):
        return
    gateway = ctx.gateway
    compiled = principal.derive(
        _COMPILED, lambda p: _cache(gateway).get(p.config["policy_rules"], p.key_id)
    )
    if compiled.broken is not None:
        raise _broken(compiled.broken, principal)
    refusal = compiled.evaluate(ctx.body, ctx.model)
    if refusal is not None:
        raise refusal_error(refusal, principal)


@hookimpl(trylast=True)
def filter_models(ctx: RequestContext, models: list[str]) -> None:
    """Drop from ``GET /v1/models`` what ``policy_rules.models`` refuses. ``trylast``, so it
    also judges the entries other plugins added (model-access's aliases): each id is judged as
    a request for it would be."""
    principal = ctx.principal
    if principal is None:
        return
    rules = principal.config.get("policy_rules")
    if not rules:
        return
    compiled = _cache(ctx.gateway).get(rules, principal.key_id)
    if compiled.broken is not None:
        raise _broken(compiled.broken, principal)
    dimension = compiled.models
    if dimension is not None:
        models[:] = [m for m in models if dimension.judge((m,)) is None]


def _broken(problem: PolicyProblem, principal: Principal) -> ServiceUnavailable:
    """Log ``policy_rules_broken`` for this request and build its 503."""
    log.warning(
        "policy_rules_broken dimension=%s pattern=%s key_id=%s",
        problem.dimension or "-",
        _quote(problem.pattern) if problem.pattern is not None else "-",
        principal.key_id,
        extra=_log_fields(problem, principal.key_id),
    )
    return broken_error(problem, principal)


def _fix_hint(principal: Principal) -> str:
    return f"tollway virtual-keys update {principal.key_id} --config-json '{{\"policy_rules\": …}}'"


def refusal_error(refusal: Refusal, principal: Principal) -> GatewayError:
    """The client error for a refusal: it names the value, the pattern and the list."""
    noun = _NOUNS[refusal.dimension]
    where = f"policy_rules.{refusal.dimension}.{refusal.list}"
    value = _quote(refusal.value)
    if len(refusal.forms) > 1:
        value += " (also judged as " + ", ".join(_quote(f) for f in refusal.forms[1:]) + ")"
    if refusal.list == "deny":
        assert refusal.pattern is not None
        why = f"it matches pattern {_quote(refusal.pattern)} in {where}"
        fix = f"remove the pattern from {where}"
    else:
        shown = ", ".join(_quote(p) for p in refusal.allow[:_SHOWN_PATTERNS])
        if len(refusal.allow) > _SHOWN_PATTERNS:
            shown += f", … ({len(refusal.allow)} patterns)"
        why = f"it is not in the allow list {where} (it matches none of {shown})"
        fix = f"add a pattern matching it to {where}"
    if refusal.dimension == "models":
        message = (
            f"model {value} is not allowed for virtual key {principal.key_id}: {why}. Use "
            f"another model, or {fix} ({_fix_hint(principal)})."
        )
        return ModelNotAllowed(message, code="policy_rules", param="model")
    message = (
        f"{noun} {value} is not allowed for virtual key {principal.key_id}: {why}. Remove the "
        f"{noun} from the request, or {fix} ({_fix_hint(principal)})."
    )
    return ToolNotAllowed(message, code=_CODES[refusal.dimension])


def broken_error(problem: PolicyProblem, principal: Principal) -> ServiceUnavailable:
    """The 503 for a policy that cannot be enforced (the gateway fails closed)."""
    return ServiceUnavailable(
        f"the policy_rules of virtual key {principal.key_id} cannot be enforced, so this "
        f"gateway refuses the key's requests until they are fixed: {problem.path}: "
        f"{problem.message}. Fix it with {_fix_hint(principal)}.",
        code="policy_rules_broken",
        retry_after=BROKEN_RETRY_AFTER,
    )
