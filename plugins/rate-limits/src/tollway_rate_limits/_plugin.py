"""The hook implementations: key limits in ``admit``, provider limits in ``before_attempt``,
settlement in ``account``.

With Redis, ``admit`` and ``before_attempt`` make no round trip of their own: the decision is
deferred to the request's Redis batch (:mod:`tollway_rate_limits._admission`) and applied —
allowed with its headers, or refused with its 429 — when the core flushes it. ``account``
queues its settlements on the gateway's settlement queue
(:func:`tollway.redis_batch.settlements`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import attrs

from tollway import (
    Principal,
    RateLimitExceeded,
    RequestContext,
    RouteTarget,
    ServiceUnavailable,
    StashKey,
    hookimpl,
)
from tollway.gateway import Gateway
from tollway.redis import BACKEND_ERRORS, describe, round_trip_deadline, shared
from tollway.redis_batch import settlements
from tollway_rate_limits._admission import State, decide
from tollway_rate_limits._limits import (
    InvalidLimits,
    Limits,
    ScopeSpecs,
    TokenEstimate,
    estimate_tokens,
    key_base,
    parse_limits,
    provider_base,
    refusal_message,
    scope_specs,
    success_headers,
)
from tollway_rate_limits._metrics import DENIED, PROVIDER_SKIPS
from tollway_rate_limits._redis import RedisStore
from tollway_rate_limits._settings import NAME, RateLimitSettings
from tollway_rate_limits._window import NEVER, Decision, LocalStore, Spec, member

__all__ = [
    "account",
    "admit",
    "before_attempt",
    "gateway_started",
    "gateway_stopping",
    "readiness_checks",
    "register_settings",
]

log = logging.getLogger("tollway.rate_limits")

DIMENSION_HEADER = "X-LangWatch-RateLimit-Dimension"
_BACKEND_ERRORS = BACKEND_ERRORS
#: Provider credentials whose specs are kept (more: the cache starts over).
_MAX_PROVIDER_SCOPES = 4096


@attrs.define
class _Reservation:
    """A tpm pre-debit to settle in ``account``."""

    keys: tuple[str, ...]
    member_id: str
    cost: int
    #: ``None`` for the key's own limit; else the provider's key and name.
    provider: tuple[str, str] | None


@attrs.define
class _ProviderSkips:
    """The soonest any skipped provider frees up: the all-providers-limited answer uses it."""

    retry_ms: int = NEVER
    dimension: str = ""


_STATE: StashKey[State] = StashKey("tollway-rate-limits.state")
_RESERVED: StashKey[list[_Reservation]] = StashKey("tollway-rate-limits.reserved")
_ESTIMATE: StashKey[TokenEstimate] = StashKey("tollway-rate-limits.estimate")
_SKIPS: StashKey[_ProviderSkips] = StashKey("tollway-rate-limits.skips")


# --- start-up and lifecycle -------------------------------------------------------------------


@hookimpl
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    register(NAME, RateLimitSettings)


@hookimpl
async def gateway_started(gateway: Gateway) -> None:
    settings: RateLimitSettings = gateway.settings.plugin(NAME)
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    redis = shared(
        gateway,
        NAME,
        max_connections=settings.redis_max_connections,
        cluster=settings.redis_cluster,
    )
    store: LocalStore | RedisStore
    if redis is not None:
        # A failed read, one reconnect and a second read: the most one decision may take.
        deadline = round_trip_deadline(
            settings.redis_socket_timeout_seconds, settings.redis_connect_timeout_seconds
        )
        store = RedisStore(redis.client, deadline)
    else:
        store = LocalStore()
    state = State(settings, store, round(settings.window_seconds * 1000), facility=redis)
    gateway.stash[_STATE] = state
    if redis is not None:
        state.policy.share(redis)  # one back-off and one probe for every plugin
    if isinstance(store, RedisStore):
        try:
            await store.ping()
        except _BACKEND_ERRORS as exc:
            state.policy.failed(exc, "start-up")
    log.info(
        "rate_limits_ready backend=%s on_redis_error=%s window_seconds=%g",
        "redis" if state.redis else "memory",
        settings.on_redis_error,
        settings.window_seconds,
    )


@hookimpl
async def gateway_stopping(gateway: Gateway) -> None:
    state = gateway.stash.get(_STATE)
    if state is not None and state.facility is not None:
        await state.facility.release(NAME)  # sends the queued settlements first


@hookimpl
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    state = gateway.stash.get(_STATE)
    if state is None or not isinstance(state.store, RedisStore):
        return None
    store = state.store
    fail_closed = state.policy.fail_closed

    async def redis() -> str:
        try:
            await store.ping()
        except _BACKEND_ERRORS as exc:
            if fail_closed:
                return f"error: rate limiter cannot reach Redis ({describe(exc)})"
            # Fail-open keeps serving, so the gateway stays ready; the check says why it's
            # degraded.
            return f"degraded: rate limiter cannot reach Redis ({describe(exc)}); failing open"
        return "ok"

    return {"redis": redis}


# --- per request ------------------------------------------------------------------------------


def _estimate(ctx: RequestContext, settings: RateLimitSettings) -> TokenEstimate:
    estimate = ctx.stash.get(_ESTIMATE)
    if estimate is None:
        estimate = estimate_tokens(
            ctx.body,
            # An audio upload is not text: only its form fields count.
            len(ctx.raw_body) if ctx.endpoint != "transcriptions" else 0,
            settings.default_output_tokens,
            embeddings=ctx.endpoint == "embeddings",
        )
        ctx.stash[_ESTIMATE] = estimate
    return estimate


def _reserve(ctx: RequestContext, specs: Sequence[Spec], provider: tuple[str, str] | None) -> None:
    for spec in specs:
        if spec.dimension == "tpm":
            ctx.stash.setdefault(_RESERVED, []).append(
                _Reservation(spec.keys, ctx.request_id, spec.cost, provider)
            )


def _retry_headers(dimension: str, retry_ms: int) -> tuple[float, dict[str, str]]:
    headers = {DIMENSION_HEADER: dimension}
    if retry_ms == NEVER:
        # Waiting won't help: say so rather than let an SDK retry.
        headers["x-should-retry"] = "false"
        return 60.0, headers
    headers["retry-after-ms"] = str(max(1, retry_ms))
    return retry_ms / 1000, headers


def _note(ctx: RequestContext, decision: str, scope: str, dimension: str | None = None) -> None:
    """The decision on the request's span: ``langwatch.rate_limit.decision`` (``allow``,
    ``block``, ``fail_open``), ``.scope`` (``key`` or ``provider``), ``.dimension``."""
    attrs = ctx.span_attributes
    attrs["langwatch.rate_limit.decision"] = decision
    attrs["langwatch.rate_limit.scope"] = scope
    if dimension:
        attrs["langwatch.rate_limit.dimension"] = dimension


@hookimpl(tryfirst=True)
async def admit(ctx: RequestContext) -> None:
    """The key's own limits: one atomic decision over rpm, rpd and tpm (with Redis, deferred to
    the request's batch: allowed or refused when the core flushes it)."""
    principal = ctx.principal
    if principal is None:
        return
    if principal.config.get("rate_limits") is None:
        return
    state: State = ctx.gateway.stash[_STATE]
    try:
        scope = principal.derive(state.key_scope, partial(_key_scope, state.settings.key_prefix))
    except InvalidLimits as exc:
        raise ServiceUnavailable(
            f"the virtual key {principal.display_prefix}… has an invalid config: {exc}; ask the "
            "operator to fix the key's rate_limits",
            code="rate_limit_config_invalid",
        ) from None
    limits = scope.limits
    if not limits:
        return
    estimate = _estimate(ctx, state.settings) if limits.tpm is not None else None
    specs = scope.specs(estimate)

    def decided(decision: Decision | None) -> None:
        _key_decided(ctx, state, specs, estimate, decision)

    decide(ctx, state, specs, decided)


def _key_scope(prefix: str, principal: Principal) -> ScopeSpecs:
    """A key's limits and specs (raises :class:`InvalidLimits`; then nothing is kept)."""
    limits = parse_limits(principal.config.get("rate_limits"))
    return scope_specs(key_base(prefix, principal.organization_id, principal.key_id), limits)


def _key_decided(
    ctx: RequestContext,
    state: State,
    specs: Sequence[Spec],
    estimate: TokenEstimate | None,
    decision: Decision | None,
) -> None:
    """Apply the key's decision: note it, refuse with 429, or add the headers and reserve."""
    if decision is None:
        _note(ctx, "fail_open", "key")
        return
    if not decision.admitted:
        spec = specs[decision.index]
        DENIED.labels(spec.dimension).inc()
        _note(ctx, "block", "key", spec.dimension)
        retry_after, headers = _retry_headers(spec.dimension, decision.retry_ms)
        raise RateLimitExceeded(
            refusal_message(
                "this virtual key",
                spec,
                decision,
                state.window_ms,
                estimate,
                f"ask the operator to raise the key's rate_limits.{spec.dimension}",
            ),
            code="rate_limit_exceeded",
            retry_after=retry_after,
            headers=headers,
        )
    if state.settings.response_headers:
        success_headers(specs, decision, state.window_ms, ctx.response_headers)
    _note(ctx, "allow", "key")
    _reserve(ctx, specs, None)


@hookimpl(trylast=True)
async def before_attempt(ctx: RequestContext, target: RouteTarget) -> None:
    """The provider credential's limits, before each attempt: refusing skips the provider
    (with Redis, the decision is deferred: the core flushes right after this hook).

    ``trylast``: in-memory checks (circuit breakers) skip a provider first, so its quota is not
    spent on an attempt that will not happen."""
    config = ctx.gateway.instances[target.provider].config
    if config.rpm is None and config.rpd is None and config.tpm is None:
        return
    state: State = ctx.gateway.stash[_STATE]
    cached = (config.key, config.rpm, config.rpd, config.tpm)
    scope = state.provider_scopes.get(cached)
    if scope is None:
        if len(state.provider_scopes) >= _MAX_PROVIDER_SCOPES:
            state.provider_scopes.clear()
        scope = state.provider_scopes[cached] = scope_specs(
            provider_base(state.settings.key_prefix, config.key),
            Limits(config.rpm, config.rpd, config.tpm),
        )
    estimate = _estimate(ctx, state.settings) if config.tpm is not None else None
    specs = scope.specs(estimate)

    def decided(decision: Decision | None) -> None:
        _provider_decided(ctx, state, target, (config.key, config.name), specs, estimate, decision)

    decide(ctx, state, specs, decided)


def _provider_decided(
    ctx: RequestContext,
    state: State,
    target: RouteTarget,
    provider: tuple[str, str],
    specs: Sequence[Spec],
    estimate: TokenEstimate | None,
    decision: Decision | None,
) -> None:
    """Apply a provider's decision: reserve, or refuse (the core skips the provider)."""
    if decision is None:
        return
    if decision.admitted:
        _reserve(ctx, specs, provider)
        return
    name = provider[1]
    spec = specs[decision.index]
    PROVIDER_SKIPS.labels(name, spec.dimension).inc()
    skipped = ctx.span_attributes.get("langwatch.rate_limit.provider_skips")
    entry = f"{name}:{spec.dimension}"
    ctx.span_attributes["langwatch.rate_limit.provider_skips"] = (
        f"{skipped},{entry}" if isinstance(skipped, str) and skipped else entry
    )
    skips = ctx.stash.setdefault(_SKIPS, _ProviderSkips())
    if decision.retry_ms != NEVER and (
        skips.retry_ms == NEVER or decision.retry_ms < skips.retry_ms
    ):
        skips.retry_ms, skips.dimension = decision.retry_ms, spec.dimension
    last = bool(ctx.targets) and target is ctx.targets[-1]
    if last and all(a.outcome == "skipped" for a in ctx.attempts):
        # Every provider of the chain was skipped: this error is the client's answer.
        dimension = skips.dimension or spec.dimension
        DENIED.labels(dimension).inc()
        _note(ctx, "block", "provider", dimension)
        retry_after, headers = _retry_headers(dimension, skips.retry_ms)
        count = len(ctx.targets)
        wait = (
            f"the first frees up in {math.ceil(skips.retry_ms / 1000)} s"
            if skips.retry_ms != NEVER
            else "none can take this request"
        )
        raise RateLimitExceeded(
            f"rate limit exceeded: every provider that serves {target.model!r} for this key "
            f"({count}) is at its gateway rate limit; {wait}. The last one: "
            + refusal_message(
                f"provider {name!r}",
                spec,
                decision,
                state.window_ms,
                estimate,
                "ask the operator to raise the provider's limits or add a provider",
            ).removeprefix("rate limit exceeded: "),
            code="provider_rate_limited",
            retry_after=retry_after,
            headers=headers,
        )
    # Normally only recorded as a skip; the client sees it if the chain stops here (a
    # fallback.max_attempts cap).
    retry_after, headers = _retry_headers(spec.dimension, decision.retry_ms)
    raise RateLimitExceeded(
        refusal_message(
            f"provider {name!r}",
            spec,
            decision,
            state.window_ms,
            estimate,
            "ask the operator to raise the provider's limits or add a provider",
        ),
        code="provider_rate_limited",
        retry_after=retry_after,
        headers=headers,
    )


@hookimpl
async def account(ctx: RequestContext) -> None:
    """Settle tpm reservations: actual usage if the provider answered, else release. With
    Redis, the settlements go on the gateway's settlement queue (sent for every request
    together, at most 50 ms later); the journal is settled either way."""
    reservations = ctx.stash.get(_RESERVED)
    if not reservations:
        return
    state: State = ctx.gateway.stash[_STATE]
    usage = ctx.usage
    actual_total = (
        None
        if usage is None
        else usage.input_tokens
        + usage.output_tokens
        + usage.cache_read_input_tokens
        + usage.cache_creation_input_tokens
    )
    ok = [a for a in ctx.attempts if a.outcome == "ok"]
    store = state.store
    for r in reservations:
        # Attempts name a provider by key (skipped) or by name (ok / error): accept both.
        served = bool(ok) if r.provider is None else any(a.provider in r.provider for a in ok)
        if not served:
            actual = 0
        elif actual_total is None:
            continue  # answered, usage unknown (e.g. the client left): keep the estimate
        else:
            actual = actual_total
        if actual == r.cost:
            continue
        new = member(r.member_id, actual) if actual > 0 else ""
        old = member(r.member_id, r.cost)
        state.journal.settle(r.keys, r.member_id, actual)
        if isinstance(store, LocalStore):
            store.settle(r.keys, old, new, actual - r.cost)
        elif state.facility is not None and not state.policy.down_until:
            # While Redis is failing, skip: the reservation expires with its window.
            keys, args = store.settle_call(r.keys, old, new, actual - r.cost, state.window_ms)
            settlements(state.facility).put(store.settle_script, keys, args, then=state.settled)
