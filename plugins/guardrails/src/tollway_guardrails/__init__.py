"""Per-key guardrails (SPEC §6): run evaluator plugins, or an HTTP webhook, on the request
(``pre``), the complete response (``post``) and each chunk of a stream (``stream_chunk``).

The key config's ``guardrails``::

    {"pre": ["pii", {"evaluator": "webhook", "url": "https://policy.internal/check",
                     "timeout_ms": 2000, "secret": "…"}],
     "post": ["pii"],
     "stream_chunk": ["pii"],
     "fail_open": {"pre": false, "post": false}}

Evaluators of one direction run concurrently; the first ``block`` wins (403
``guardrail_blocked`` with its reason), ``modify`` verdicts are applied in config order. An
evaluator that fails (timeout, error, unusable answer) fails the direction **closed** — 503
``service_unavailable``, code ``guardrail_unavailable`` — unless ``fail_open.<direction>`` is
true; ``stream_chunk`` always fails open, within a 50 ms budget per chunk that the stream
waits for (see :mod:`tollway_guardrails._stream`).

This plugin registers the built-in ``webhook`` evaluator and runs every evaluator registered
through ``register_guardrail_evaluators`` (the protocol is :mod:`tollway.guardrails`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from tollway import RequestContext, StashKey, Verdict, hookimpl
from tollway.guardrails import (
    Evaluator,
    post_content,
    pre_content,
    request_texts,
    response_texts,
    set_texts,
)
from tollway_guardrails._config import (
    DEFAULT_TIMEOUT_MS,
    EMPTY_PLAN,
    EvaluatorRef,
    Plan,
    compile_plan,
    validate_guardrails_config,
)
from tollway_guardrails._metrics import VERDICTS
from tollway_guardrails._run import Decision, run_direction
from tollway_guardrails._stream import StreamGuard
from tollway_guardrails._webhook import (
    SIGNATURE_HEADER,
    WebhookError,
    WebhookEvaluator,
    parse_answer,
    sign,
    validate_webhook_settings,
)

__all__ = [
    "NAME",
    "SIGNATURE_HEADER",
    "VERDICTS",
    "EvaluatorRef",
    "GuardrailsSettings",
    "GuardrailsState",
    "Plan",
    "StreamGuard",
    "WebhookError",
    "WebhookEvaluator",
    "collect_evaluators",
    "compile_plan",
    "parse_answer",
    "sign",
    "validate_guardrails_config",
    "validate_webhook_settings",
]

log = logging.getLogger("tollway.guardrails")

#: The settings section (``[plugin.guardrails]``).
NAME = "guardrails"
#: The largest ``stream_chunk_window_chars``.
MAX_WINDOW_CHARS = 4096


@attrs.frozen
class GuardrailsSettings:
    """``[plugin.guardrails]`` in the gateway's TOML config."""

    #: How long ``pre``/``post`` wait for an evaluator whose entry has no ``timeout_ms``.
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS
    #: The per-chunk budget of ``stream_chunk`` evaluations (SPEC §6: 50 ms).
    stream_chunk_budget_ms: int = 50
    #: How much text (characters) a guarded stream holds back so that a pattern split across
    #: deltas is judged whole; 0 judges each chunk on its own.
    stream_chunk_window_chars: int = 64
    #: No longer used (chunk evaluations are waited for, never queued); still accepted so that
    #: existing config files load.
    max_pending_chunk_evaluations: int = 64

    def __attrs_post_init__(self) -> None:
        for name in ("default_timeout_ms", "stream_chunk_budget_ms"):
            value = getattr(self, name)
            if not 0 < value <= 60_000:
                raise ValueError(f"{name} must be between 1 and 60000 ms, not {value}")
        if not 0 <= self.stream_chunk_window_chars <= MAX_WINDOW_CHARS:
            raise ValueError(
                f"stream_chunk_window_chars must be between 0 and {MAX_WINDOW_CHARS}, not "
                f"{self.stream_chunk_window_chars}"
            )
        if self.max_pending_chunk_evaluations < 1:
            raise ValueError("max_pending_chunk_evaluations must be at least 1")


class GuardrailsState:
    """One gateway's evaluators and compiled per-key plans (on ``gateway.stash``)."""

    def __init__(
        self,
        evaluators: Mapping[str, Any],
        settings: GuardrailsSettings | None = None,
        max_plans: int = 4096,
    ) -> None:
        self.evaluators = dict(evaluators)
        self.settings = settings or GuardrailsSettings()
        self.max_plans = max_plans
        # id(config) → (config, plan); the config is kept so its id stays unique.
        self._plans: dict[int, tuple[Any, Plan]] = {}

    def plan(self, config: Any) -> Plan:
        """The compiled plan of a key's ``guardrails`` config (cached per config object)."""
        if not config:
            return EMPTY_PLAN
        entry = self._plans.get(id(config))
        if entry is not None and entry[0] is config:
            return entry[1]
        plan = compile_plan(config, self.evaluators, self.settings.default_timeout_ms)
        if len(self._plans) >= self.max_plans:
            del self._plans[next(iter(self._plans))]
        self._plans[id(config)] = (config, plan)
        return plan


_STATE: StashKey[GuardrailsState] = StashKey("guardrails.state")
_STREAM: StashKey[StreamGuard] = StashKey("guardrails.stream")


def collect_evaluators(pm: Any) -> dict[str, Any]:
    """Call every ``register_guardrail_evaluators`` implementation of a plugin manager and
    return the evaluators by name. Two plugins registering one name, or an object without
    ``async def evaluate``, raise ``ValueError`` naming the plugins."""
    found: dict[str, tuple[str, Any]] = {}
    caller = pm.hook.register_guardrail_evaluators
    for impl in reversed(caller.get_hookimpls()):
        plugin = pm.get_name(impl.plugin) or repr(impl.plugin)

        def register(name: str, evaluator: Any, plugin: str = plugin) -> None:
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"plugin {plugin!r} registered a guardrail evaluator without a name"
                )
            if not isinstance(evaluator, Evaluator):
                raise ValueError(
                    f"plugin {plugin!r} registered guardrail evaluator {name!r}, which has no "
                    "async evaluate(request) method (see tollway.guardrails.Evaluator)"
                )
            if name in found and found[name][1] is not evaluator:
                raise ValueError(
                    f"guardrail evaluator {name!r} is registered by two plugins: "
                    f"{found[name][0]!r} and {plugin!r}; uninstall or disable one"
                )
            found[name] = (plugin, evaluator)

        impl.function(*[{"register": register}[n] for n in impl.argnames])
    return {name: evaluator for name, (_, evaluator) in found.items()}


def _state(ctx: RequestContext) -> GuardrailsState | None:
    gateway = ctx.gateway
    stash = getattr(gateway, "stash", None)
    return stash.get(_STATE) if stash is not None else None


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


@hookimpl
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    register(NAME, GuardrailsSettings)


@hookimpl
def register_guardrail_evaluators(register: Callable[[str, Any], None]) -> None:
    register("webhook", WebhookEvaluator())


@hookimpl
async def gateway_started(gateway: Any) -> None:
    evaluators = collect_evaluators(gateway.pm)
    state = GuardrailsState(evaluators, gateway.settings.plugin(NAME))
    policy = getattr(gateway, "outbound", None)
    webhook = evaluators.get("webhook")
    if policy is not None and isinstance(webhook, WebhookEvaluator):
        webhook.policy = policy  # before start(): the session's resolver uses it
    for name, evaluator in evaluators.items():
        if isinstance(evaluator, WebhookEvaluator):
            evaluator.egress = gateway.egress
        start = getattr(evaluator, "start", None)
        if callable(start):
            try:
                await start()
            except Exception as exc:
                raise RuntimeError(f"guardrail evaluator {name!r} failed to start: {exc}") from exc
    gateway.stash[_STATE] = state
    log.info(
        "guardrails_started evaluators=%s",
        ",".join(sorted(evaluators)),
        extra={"evaluators": sorted(evaluators)},
    )


@hookimpl
async def gateway_stopping(gateway: Any) -> None:
    state = gateway.stash.get(_STATE)
    if state is None:
        return
    for name, evaluator in state.evaluators.items():
        close = getattr(evaluator, "aclose", None)
        if callable(close):
            try:
                await close()
            except Exception:
                log.exception("guardrail_evaluator_close_failed evaluator=%s", name)


@hookimpl
async def pre_guardrail(ctx: RequestContext) -> Verdict | None:
    principal = ctx.principal
    if principal is None:
        return None
    config = principal.config.get("guardrails")
    if not config:
        return None
    state = _state(ctx)
    if state is None:
        return None
    plan = state.plan(config)
    if plan.pre:
        slots = request_texts(ctx.endpoint, ctx.body)
        texts = [s.text for s in slots]
        content = pre_content(slots, ctx.body.get("model"))
        decision: Decision = await run_direction(ctx, plan, "pre", content, texts)
        verdict = decision.verdict
        if verdict is not None and verdict.decision == "block":
            return verdict
        if decision.texts is not None:
            ctx.set_body(set_texts(ctx.body, slots, decision.texts))
    else:
        verdict = None
    if ctx.stream and plan.stream_chunk:
        guard = StreamGuard(
            ctx,
            plan.stream_chunk,
            state.settings.stream_chunk_budget_ms / 1000,
            state.settings.stream_chunk_window_chars,
        )
        ctx.stash[_STREAM] = guard
        # Only this request's stream is inspected; other streams pay no per-chunk call.
        ctx.stream_filters.append(guard)
    return verdict


@hookimpl
async def post_guardrail(ctx: RequestContext, response: Any) -> Verdict | None:
    principal = ctx.principal
    if principal is None or not 200 <= response.status < 300:
        return None
    config = principal.config.get("guardrails")
    if not config:
        return None
    state = _state(ctx)
    if state is None:
        return None
    plan = state.plan(config)
    if not plan.post:
        return None
    try:
        doc = response.json
    except Exception:
        return None  # not JSON: no text to judge
    slots = response_texts(ctx.endpoint, doc)
    if not slots:
        return None
    texts = [s.text for s in slots]
    content = post_content(texts, ctx.resolved_model or ctx.model)
    decision = await run_direction(ctx, plan, "post", content, texts)
    verdict = decision.verdict
    if decision.texts is not None:
        response.set_json(set_texts(doc, slots, decision.texts))
    return verdict


@hookimpl
def account(ctx: RequestContext) -> None:
    guard = ctx.stash.get(_STREAM)
    if guard is not None:
        guard.finish(ctx)
