"""Dispatch: try the fallback chain in order, behind circuit breakers and ``before_attempt``."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from tollway._breaker import Breaker, BreakerSettings, Ticket, counts_as_failure
from tollway._context import RequestContext, flush_deferred
from tollway._errors import (
    GatewayError,
    ProviderError,
    RateLimitExceeded,
    ServiceUnavailable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamTimeoutError,
)
from tollway._translate import send_via
from tollway._types import Attempt, RouteTarget
from tollway.formats import NeedsStoredState
from tollway.outbound import ALLOW_CIDRS_ENV
from tollway.provider import Provider, ProviderResult, UpstreamHTTP
from tollway.routing import (
    DEFAULT_COOLDOWN_SECONDS,
    DEFAULT_MAX_TOKENS_HEADER,
    FAILURE_PENALTY_SECONDS,
    LiveStats,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from tollway._hooks import Hooks
    from tollway.config import Settings

__all__ = ["Dispatch", "OutboundRefusedError"]

log = logging.getLogger("tollway.gateway")


class Dispatch:
    """Dispatch with fallback over the route's targets, behind each provider's breaker."""

    # Set by the Gateway.
    hooks: Hooks
    http: UpstreamHTTP
    breakers: dict[str, Breaker]
    instances: dict[str, Provider]
    live: LiveStats
    settings: Settings

    async def dispatch(self, ctx: RequestContext) -> ProviderResult:
        """Try the chain in order; fall back on retryable failures before the first byte.

        Providers whose breaker is open, or that are cooling down after an upstream 429
        (``Retry-After``, shared by the replicas), are skipped without a call (not counted as
        attempts); ``fallback.max_attempts`` in the key's config caps the attempts. When every
        provider is cooling down, the request waits for the first to come back, up to
        ``[routing] max_cooldown_wait_seconds``, then walks the chain again.
        """
        bound = self.settings.routing.max_cooldown_wait_seconds
        waited = 0.0
        answered: Exception | None = None  # the last error an upstream actually answered
        while True:
            try:
                return await self._walk(ctx)
            except _Throttled as exc:
                if exc.attempted:
                    answered = exc.error
                if exc.wait <= 0 or waited + exc.wait > bound:
                    # Giving up: the upstream's own 429 (passed through) when one was asked
                    # during this request, the gateway's providers_cooling_down only when none was.
                    raise (answered or exc.error) from None
                log.info("provider_cooldown_wait seconds=%.2f", exc.wait)
                await asyncio.sleep(exc.wait)
                waited += exc.wait

    async def _walk(self, ctx: RequestContext) -> ProviderResult:
        ctx.attempts_exhausted = False  # a walk after a cool-down wait starts over
        failures: list[tuple[Provider, UpstreamError]] = []
        skipped: GatewayError | None = None
        cooling: list[float] = []
        max_attempts = _max_attempts(ctx)
        live = self.live
        for target in ctx.targets:
            if len(failures) >= max_attempts:
                break
            provider = self.instances.get(target.provider)
            if provider is None:
                raise ServiceUnavailable(
                    f"the route names provider {target.provider!r}, which is not configured on "
                    "this gateway; fix the routing policy or the route plugin",
                    code="provider_unknown",
                )
            left = live.cooling(provider.key)
            if left > 0:
                cooling.append(left)
                ctx.attempts.append(
                    Attempt(
                        provider.key,
                        provider.type,
                        target.model,
                        "cooling_down",
                        None,
                        "cooling_down",
                        0.0,
                    )
                )
                continue
            breaker = self._breaker(provider)
            ticket = breaker.admit()
            if ticket is None:
                ctx.attempts.append(
                    Attempt(
                        provider.key,
                        provider.type,
                        target.model,
                        "circuit_open",
                        None,
                        "circuit_open",
                        0.0,
                        breaker.state(),
                    )
                )
                continue
            try:
                await self.hooks.before_attempt(ctx, target)
                await flush_deferred(ctx)  # what before_attempt deferred; a refusal skips
            except GatewayError as exc:
                skipped = _skip(ctx, provider, target, breaker, ticket, exc)
                continue
            ctx.provider, ctx.provider_type, ctx.resolved_model = (
                provider.name,
                provider.type,
                target.model,
            )
            # Each attempt reports its own default (a failed Anthropic attempt's is not the
            # answering provider's).
            ctx.response_headers.pop(DEFAULT_MAX_TOKENS_HEADER, None)
            live.started(provider.key)
            t0 = time.perf_counter()
            try:
                result = await send_via(
                    provider, ctx, target, self.http.for_provider(provider.config)
                )
                if result.events is not None:
                    result.events = await _prime(result.events)
            except NeedsStoredState as exc:
                # Not this provider's to serve (a Responses request needing stored state, and
                # no Responses API here): a native provider later in the chain may.
                live.ended(provider.key)
                skipped = _skip(ctx, provider, target, breaker, ticket, exc)
                continue
            except UpstreamError as exc:
                live.ended(provider.key)
                elapsed = time.perf_counter() - t0
                ctx.upstream_wait_s += elapsed
                status = getattr(exc, "status", None)
                breaker.record(ticket, counts_as_failure(status))
                if counts_as_failure(status):
                    # A failing provider sinks under least-latency instead of staying
                    # "unmeasured" (tried first) forever.
                    live.first_byte(provider.key, elapsed + FAILURE_PENALTY_SECONDS)
                if status == 429 and isinstance(exc, UpstreamHTTPError):
                    pause = retry_after_seconds(exc.headers) or DEFAULT_COOLDOWN_SECONDS
                    live.cool_down(provider.key, pause)
                    cooling.append(pause)
                ctx.attempts.append(
                    Attempt(
                        provider.key,
                        provider.type,
                        target.model,
                        "error",
                        status,
                        exc.reason,
                        elapsed,
                        breaker.state(),
                    )
                )
                log.info(
                    "provider_attempt_failed provider=%s model=%s reason=%s",
                    provider.name,
                    target.model,
                    exc.reason,
                )
                failures.append((provider, exc))
                if not exc.retryable:
                    break
                continue
            except BaseException:
                live.ended(provider.key)
                breaker.release(ticket)
                raise
            breaker.record(ticket, counts_as_failure(result.status))
            elapsed = time.perf_counter() - t0
            live.first_byte(provider.key, elapsed)
            ctx.in_flight_to = provider.key
            ctx.upstream_wait_s += elapsed
            ctx.attempts.append(
                Attempt(
                    provider.key,
                    provider.type,
                    target.model,
                    "ok",
                    result.status,
                    "",
                    elapsed,
                    breaker.state(),
                )
            )
            return result
        throttled = bool(cooling) and all(getattr(e, "status", None) == 429 for _, e in failures)
        if not failures:
            if skipped is not None:
                raise skipped
            if cooling:
                wait = min(cooling)
                raise _Throttled(
                    wait,
                    attempted=False,
                    error=RateLimitExceeded(
                        "every provider for this request is rate limited upstream and cooling "
                        f"down (the first is back in {wait:.1f} s); retry after that",
                        code="providers_cooling_down",
                        retry_after=max(1, math.ceil(wait)),
                    ),
                )
            names = ", ".join(t.provider for t in ctx.targets)
            raise ServiceUnavailable(
                f"every provider for this request is failing and temporarily skipped by its "
                f"circuit breaker ({names}); retry shortly",
                code="circuit_open",
                retry_after=5,
            )
        error = _exhausted(failures)
        ctx.attempts_exhausted = not isinstance(error, _PassThrough)
        if throttled:
            raise _Throttled(min(cooling), attempted=True, error=error)
        raise error

    def _breaker(self, provider: Provider) -> Breaker:
        """The provider's breaker, its settings following the provider's
        ``config.circuit_breaker`` (a new revision of a stored provider may change them)."""
        raw = provider.config.config.get("circuit_breaker")
        breaker = self.breakers.get(provider.key)
        if breaker is not None and breaker.source is raw:
            return breaker
        settings, problems = BreakerSettings.parse(
            raw, f"providers[{provider.name}].config.circuit_breaker"
        )
        for problem in problems:
            log.warning("circuit_breaker_setting_ignored %s", problem)
        if breaker is None:
            breaker = self.breakers[provider.key] = Breaker(settings)
        else:
            breaker.settings = settings
        breaker.source = raw
        return breaker


class _Throttled(Exception):
    """Nothing answered and every provider tried or skipped is cooling down after a 429:
    :meth:`Dispatch.dispatch` may wait ``wait`` seconds and walk again, else raise ``error``."""

    def __init__(self, wait: float, *, attempted: bool, error: Exception) -> None:
        self.wait = wait
        #: Whether this walk asked an upstream (``error`` is its answer) or only skipped.
        self.attempted = attempted
        self.error = error


class _PassThrough(Exception):
    def __init__(self, error: UpstreamHTTPError) -> None:
        self.error = error


async def _prime(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Wait for the first upstream event, so a stream that fails before any content can still
    fall back; then hand back an iterator that yields it first."""
    it = events.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = b""

    async def chained() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in it:
                yield chunk
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()

    return chained()


def _skip(
    ctx: RequestContext,
    provider: Provider,
    target: RouteTarget,
    breaker: Breaker,
    ticket: Ticket,
    exc: GatewayError,
) -> GatewayError:
    """Record an attempt skipped before its call (refused by ``before_attempt``, or not this
    provider's to serve) and free its breaker ticket; the skip is the answer if none follows."""
    breaker.release(ticket)
    ctx.attempts.append(
        Attempt(
            provider.key,
            provider.type,
            target.model,
            "skipped",
            None,
            exc.type,
            0.0,
            breaker.state(),
        )
    )
    return exc


def _max_attempts(ctx: RequestContext) -> int:
    principal = ctx.principal
    if principal is not None:
        fallback = principal.config.get("fallback")
        if isinstance(fallback, dict):
            value = fallback.get("max_attempts")
            if isinstance(value, int) and value > 0:
                return value
    return len(ctx.targets)


_STORE_HINT = (
    f"the gateway operator can list its network in {ALLOW_CIDRS_ENV}; a stored provider "
    "cannot set allow_private_network"
)


class _RefusedMixin:
    """An adapter whose URLs the SSRF guard refuses: every attempt fails before connecting
    (a failed attempt, so the fallback chain goes on), saying what to fix."""

    name: str
    refused_because: str

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        raise OutboundRefusedError(
            f"provider {self.name!r} is refused by the SSRF guard: {self.refused_because}"
        )


class OutboundRefusedError(UpstreamConnectError):
    """An attempt refused by the SSRF guard before any connection was made."""

    reason = "outbound_refused"


_REFUSED_CLASSES: dict[type[Provider], type[Provider]] = {}


def _refused(provider: Provider, problems: list[str]) -> Provider:
    cls = type(provider)
    refused_cls = _REFUSED_CLASSES.get(cls)
    if refused_cls is None:
        refused_cls = type(f"Refused{cls.__name__}", (_RefusedMixin, cls), {})
        _REFUSED_CLASSES[cls] = refused_cls
    refused = refused_cls(provider.config)
    refused.refused_because = "; ".join(problems)  # type: ignore[attr-defined]
    log.warning("provider_refused_by_ssrf_guard provider=%s reason=%s", provider.name, problems[0])
    return refused


def _exhausted(failures: list[tuple[Provider, UpstreamError]]) -> Exception:
    last_provider, last = failures[-1]
    if isinstance(last, UpstreamHTTPError) and not last.retryable:
        # A refusal no other provider can fix (e.g. 400): the client sees it as it is.
        return _PassThrough(last)
    if len(failures) == 1:
        if isinstance(last, UpstreamHTTPError):
            return _PassThrough(last)
        if isinstance(last, UpstreamTimeoutError):
            return UpstreamTimeout(
                f"provider {last_provider.name} ({last_provider.type}) did not answer in time: "
                f"{last.message}"
            )
        return ProviderError(
            f"provider {last_provider.name} ({last_provider.type}) failed: {last.message}",
            code=last.reason,
        )
    summary = "; ".join(f"{p.name}: {e.reason}" for p, e in failures)
    if all(isinstance(e, UpstreamTimeoutError) for _, e in failures):
        return UpstreamTimeout(f"every provider attempt timed out ({summary})")
    return ProviderError(
        f"all {len(failures)} provider attempts failed ({summary}); check the providers' "
        "status and credentials",
        code="fallback_exhausted",
    )
