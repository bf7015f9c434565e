"""The reservation estimate: what a request may cost, before it runs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tollway import Principal, RequestContext, Usage
from tollway_budgets._plan import PLAN_LIMIT, Plan
from tollway_budgets._prices import Prices, cost_micros, override_entry
from tollway_budgets._settings import BudgetSettings
from tollway_budgets._state import AVERAGE_MIN_SAMPLES, State

if TYPE_CHECKING:
    from tollway.config import ProviderConfig

__all__ = ["estimate_micros", "estimate_request"]

_MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _requested_output(body: dict[str, Any]) -> int | None:
    for field in _MAX_TOKENS_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def estimate_micros(
    body_bytes: int,
    requested_output: int | None,
    prices: Prices | None,
    settings: BudgetSettings,
    *,
    embeddings: bool = False,
    recent_output: float | None = None,
    default_max_output: int | None = None,
) -> int:
    """The reservation for a request: its input at ``ceil(body bytes / 4)`` tokens plus an
    output estimate of ``min(max_tokens, output_estimate_cap_tokens)`` tokens (never
    ``max_tokens`` blindly), at the model's input and output prices, rounded once.

    Without ``max_tokens`` the output is bounded by the model's max output (``prices``, from
    the price table) and by ``default_max_output`` (the budget's own
    ``default_max_output_tokens``; None: the settings'), whichever is smaller — the worst case
    of the request when the model's max output is the smaller. ``recent_output``
    (``recent_average`` mode) lowers the output estimate to 1.5 times the model's recent
    average."""
    if prices is None:
        return 0
    input_tokens = -(-body_bytes // 4)
    output = 0
    if not embeddings:
        if requested_output is None:
            ceiling = (
                settings.no_max_tokens_output
                if default_max_output is None
                else (default_max_output)
            )
            known = prices.max_output_tokens
            requested_output = ceiling if known is None else min(known, ceiling)
        output = min(requested_output, settings.output_estimate_cap_tokens)
        if recent_output is not None:
            output = min(output, math.ceil(recent_output * 1.5))
    i, o, _, _, d = prices.for_prompt(input_tokens).scaled
    return (2 * (input_tokens * i + output * o) + d) // (2 * d)  # rounded once, half up


#: Endpoints priced by their own units (characters, seconds, images), estimated from the request.
_UNIT_ENDPOINTS = frozenset({"speech", "transcriptions", "images"})


def _unit_estimate(ctx: RequestContext, prices: Prices | None) -> int:
    """The reservation of a speech, transcription or image request: speech's characters (and
    their tokens, for token-priced voices) are known; an image request's ``n`` images at the
    per-image price (token-priced image models: the prompt's tokens); a transcription's
    duration is not known before the answer, so it reserves nothing and settles its cost."""
    if prices is None or ctx.endpoint == "transcriptions":
        return 0
    body = ctx.body
    if ctx.endpoint == "speech":
        text = body.get("input")
        chars = len(text) if isinstance(text, str) else 0
        return cost_micros(Usage(input_tokens=-(-chars // 4), characters=chars), prices)
    n = body.get("n", 1)
    images = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    return cost_micros(
        Usage(input_tokens=-(-len(ctx.raw_body) // 4), images=images if prices.per_image else 0),
        prices,
    )


def _chain_configs(ctx: RequestContext, principal: Principal) -> list[ProviderConfig]:
    return [p.config for p, _ in ctx.gateway.chain(principal, ctx.endpoint)]


def _aliased(principal: Principal, model: str) -> str:
    # tollway-model-access (trylast too) runs after this plugin and may still resolve an
    # alias: price the model the alias names.
    aliases = principal.config.get("model_aliases")
    if isinstance(aliases, Mapping):
        target = aliases.get(model)
        if isinstance(target, str) and target:
            return target
    return model


def _find_prices(
    ctx: RequestContext, state: State, principal: Principal, model: str
) -> Prices | None:
    """The prices of ``model`` on the key's chain: the first provider whose ``config.prices``
    names it, else the table's for the chain's provider types (None: unknown)."""
    configs = _chain_configs(ctx, principal)
    for config in configs:
        override = state.override_of(config)
        if override and override_entry(override, model) is not None:
            return state.prices(model, config, config.type)
    found: Prices | None = None
    for provider_type in dict.fromkeys([c.type for c in configs] or [""]):
        found = state.table.lookup(model, provider_type)
        if found is not None:
            break
    return found


def estimate_request(
    ctx: RequestContext,
    state: State,
    principal: Principal,
    default_max_output: int | None = None,
    plan: Plan | None = None,
) -> int:
    """The request's reservation. ``plan``: the key's (:mod:`tollway_budgets._plan`), which
    remembers the prices found per model."""
    if plan is None:
        model = _aliased(principal, ctx.model)
        found = _find_prices(ctx, state, principal, model)
    else:
        key = (ctx.model, ctx.endpoint)
        cached = plan.prices.get(key)
        if cached is None:
            model = _aliased(principal, ctx.model)
            cached = (model, _find_prices(ctx, state, principal, model))
            if len(plan.prices) >= PLAN_LIMIT:
                plan.prices.clear()
            plan.prices[key] = cached
        model, found = cached
    prices = state.priced(model, found)
    if ctx.endpoint in _UNIT_ENDPOINTS:
        return _unit_estimate(ctx, prices)
    recent = None
    if state.settings.output_estimate == "recent_average":
        average = state.averages.get(model)
        if average is not None and average.samples >= AVERAGE_MIN_SAMPLES:
            recent = average.value
    return estimate_micros(
        len(ctx.raw_body),
        _requested_output(ctx.body),
        prices,
        state.settings,
        embeddings=ctx.endpoint == "embeddings",
        recent_output=recent,
        default_max_output=default_max_output,
    )
