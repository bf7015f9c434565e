"""The hook implementations: key limits in ``admit``, provider limits in ``before_attempt``,
settlement in ``account``."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from tollway import (
    RateLimitExceeded,
    RequestContext,
    RouteTarget,
    ServiceUnavailable,
    StashKey,
    hookimpl,
)
from tollway.gateway import Gateway
from tollway.redis import (
    BACKEND_ERRORS,
    FailurePolicy,
    RedisFacility,
    describe,
    round_trip_deadline,
    shared,
)
from tollway_rate_limits._journal import Journal, epoch_key
from tollway_rate_limits._limits import (
    InvalidLimits,
    Limits,
    TokenEstimate,
    estimate_tokens,
    key_base,
    parse_limits,
    provider_base,
    refusal_message,
    specs_for,
    success_headers,
)
from tollway_rate_limits._metrics import DENIED, PROVIDER_SKIPS, REDIS_ERRORS
from tollway_rate_limits._redis import HealFirst, RedisStore
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


def _policy(settings: RateLimitSettings) -> FailurePolicy:
    """What the rate limiter does while Redis fails (``on_redis_error``)."""
    return FailurePolicy(
        log,
        "rate_limit_redis_unavailable policy=%(policy)s during=%(during)s error=%(error)s",
        recovered="rate_limit_redis_recovered",
        errors=REDIS_ERRORS,
        on_error=settings.on_redis_error,
        retry_interval=settings.redis_retry_interval_seconds,
        refusal=(
            "the gateway's rate limiter cannot reach Redis, and it is configured to refuse "
            "requests then (on_redis_error = fail_closed); retry shortly, or ask the operator "
            "to check GATEWAY_REDIS_URL"
        ),
        refusal_code="rate_limiter_unavailable",
    )


@attrs.define
class _State:
    settings: RateLimitSettings
    store: LocalStore | RedisStore
    window_ms: int
    policy: FailurePolicy = attrs.field(
        default=attrs.Factory(lambda self: _policy(self.settings), takes_self=True)
    )
    #: The gateway's Redis (None: in process).
    facility: RedisFacility | None = None
    #: With Redis: what this replica admitted, to put back (:mod:`tollway_rate_limits._journal`).
    journal: Journal = attrs.field(
        default=attrs.Factory(
            lambda self: Journal(
                f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}", self.window_ms
            ),
            takes_self=True,
        )
    )

    @property
    def redis(self) -> bool:
        return isinstance(self.store, RedisStore)


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


_STATE: StashKey[_State] = StashKey("tollway-rate-limits.state")
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
    state = _State(settings, store, round(settings.window_seconds * 1000), facility=redis)
    gateway.stash[_STATE] = state
    if redis is not None:
        state.policy.share(redis)  # one back-off and one probe for every plugin
    if isinstance(store, RedisStore):
        store.on_settle_error = lambda exc: state.policy.failed(exc, "settlement")
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
    if state is not None and isinstance(state.store, RedisStore):
        await state.store.close()
    if state is not None and state.facility is not None:
        await state.facility.release(NAME)


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


async def _decide(state: _State, specs: Sequence[Spec], member_id: str) -> Decision | None:
    """One atomic decision; ``None`` means "Redis is down and the policy is fail_open".

    With Redis, the scope's journal is put back first when Redis missed it (an outage during
    which this replica admitted fail-open, or Redis lost its data)."""
    store = state.store
    if isinstance(store, LocalStore):
        return store.acquire(specs, member_id, state.window_ms)
    policy = state.policy
    journal = state.journal
    if policy.available():
        epoch = epoch_key(specs)
        try:
            if epoch in journal.dirty:
                await _heal(state, store, epoch, lost=False)
            try:
                decision = await _acquire(state, store, specs, member_id, epoch)
            except HealFirst:
                await _heal(state, store, epoch, lost=True)
                decision = await _acquire(state, store, specs, member_id, epoch)
        except _BACKEND_ERRORS as exc:
            policy.failed(exc, "admission")
        else:
            policy.ok()
            if decision.admitted:
                journal.record(
                    specs,
                    member_id,
                    decision.now_ms,
                    fail_open=False,
                    remaining=decision.remaining,
                )
            else:
                journal.observe(specs[decision.index], decision.now_ms, decision.used)
            return decision
    policy.refuse()
    journal.record(specs, member_id, None, fail_open=True)
    return None


async def _acquire(
    state: _State, store: RedisStore, specs: Sequence[Spec], member_id: str, epoch: str
) -> Decision:
    return await store.acquire(
        specs, member_id, state.window_ms, node_id=state.journal.node_id, epoch=epoch
    )


async def _heal(state: _State, store: RedisStore, epoch: str, *, lost: bool) -> None:
    """Put back this replica's journal for one scope (one put-back per scope at a time; the
    scope's other decisions wait for it)."""
    journal = state.journal
    running = journal.replaying.get(epoch)
    if running is not None:
        await asyncio.shield(running)
        return
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    journal.replaying[epoch] = future
    try:
        journal.dirty.discard(epoch)
        try:
            restored = await store.heal(
                epoch, journal.node_id, journal.entries(epoch), state.window_ms, lost=lost
            )
        except BaseException:
            journal.dirty.add(epoch)
            raise
        journal.restored += restored
        if restored:
            log.info("rate_limit_window_restored scope=%s entries=%d", epoch, restored)
    finally:
        del journal.replaying[epoch]
        future.set_result(None)


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
    """The key's own limits: one atomic decision over rpm, rpd and tpm."""
    principal = ctx.principal
    if principal is None:
        return
    raw = principal.config.get("rate_limits")
    if raw is None:
        return
    try:
        limits = parse_limits(raw)
    except InvalidLimits as exc:
        raise ServiceUnavailable(
            f"the virtual key {principal.display_prefix}… has an invalid config: {exc}; ask the "
            "operator to fix the key's rate_limits",
            code="rate_limit_config_invalid",
        ) from None
    if not limits:
        return
    state: _State = ctx.gateway.stash[_STATE]
    estimate = _estimate(ctx, state.settings) if limits.tpm is not None else None
    base = key_base(state.settings.key_prefix, principal.organization_id, principal.key_id)
    specs = specs_for(base, limits, estimate)
    decision = await _decide(state, specs, ctx.request_id)
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
    """The provider credential's limits, before each attempt: refusing skips the provider.

    ``trylast``: in-memory checks (circuit breakers) skip a provider first, so its quota is not
    spent on an attempt that will not happen."""
    config = ctx.gateway.instances[target.provider].config
    if config.rpm is None and config.rpd is None and config.tpm is None:
        return
    state: _State = ctx.gateway.stash[_STATE]
    limits = Limits(config.rpm, config.rpd, config.tpm)
    estimate = _estimate(ctx, state.settings) if config.tpm is not None else None
    specs = specs_for(provider_base(state.settings.key_prefix, config.key), limits, estimate)
    decision = await _decide(state, specs, ctx.request_id)
    if decision is None:
        return
    if decision.admitted:
        _reserve(ctx, specs, (config.key, config.name))
        return
    spec = specs[decision.index]
    PROVIDER_SKIPS.labels(config.name, spec.dimension).inc()
    skipped = ctx.span_attributes.get("langwatch.rate_limit.provider_skips")
    entry = f"{config.name}:{spec.dimension}"
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
                f"provider {config.name!r}",
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
            f"provider {config.name!r}",
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
    """Settle tpm reservations: actual usage if the provider answered, else release."""
    reservations = ctx.stash.get(_RESERVED)
    if not reservations:
        return
    state: _State = ctx.gateway.stash[_STATE]
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
        store = state.store
        state.journal.settle(r.keys, r.member_id, actual)
        if isinstance(store, LocalStore):
            store.settle(r.keys, old, new, actual - r.cost)
            continue
        if not state.policy.available():
            return  # the reservations expire with their window
        if store.batching:
            store.queue_settle(r.keys, old, new, actual - r.cost, state.window_ms)
            continue
        try:
            await store.settle(r.keys, old, new, actual - r.cost, state.window_ms)
        except _BACKEND_ERRORS as exc:
            state.policy.failed(exc, "settlement")
            return
        state.policy.ok()
