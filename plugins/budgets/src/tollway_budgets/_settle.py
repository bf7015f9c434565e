"""Recording and settlement: the call's exact cost, its ledger entry (spooled before a complete
answer reaches the client), and the reservation settled to that cost — with Redis through the
settlement queue (:func:`tollway.redis_batch.settlements`): one pipeline for every request
settling within the same 50 ms (SETTLE_DELAY_SECONDS), off the request's path."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import attrs

from tollway import RequestContext, Usage, hookimpl
from tollway.redis import BACKEND_ERRORS
from tollway.redis_batch import settlements
from tollway_budgets._budgets import end_user_of
from tollway_budgets._leases import settle_later
from tollway_budgets._prices import billed_output_tokens, cost_micros
from tollway_budgets._state import CACHE_LIMIT, REQUEST, STATE, Average, Request, State
from tollway_budgets._store import LocalStore
from tollway_budgets._windows import format_us

if TYPE_CHECKING:
    from tollway.gateway import ResponseView

__all__ = ["TERMINAL", "account", "ends_stream", "on_stream_chunk", "post_guardrail", "record"]

#: The line that ends a complete stream, per client endpoint. Matched at the start of a line
#: only: the same words inside an event's JSON (a model quoting them) are not the end.
TERMINAL = {
    "chat": (b"data: [DONE]", b"data:[DONE]"),
    "messages": (b"event: message_stop", b"event:message_stop"),
    "responses": (
        b"event: response.completed",
        b"event: response.incomplete",
        b"event: response.failed",
    ),
}


def ends_stream(chunk: bytearray, markers: tuple[bytes, ...]) -> bool:
    for marker in markers:
        at = chunk.find(marker)
        while at != -1:
            if at == 0 or chunk[at - 1] in (0x0A, 0x0D):
                return True
            at = chunk.find(marker, at + 1)
    return False


def _served_by(ctx: RequestContext) -> Any:
    for attempt in reversed(ctx.attempts):
        if attempt.outcome == "ok":
            return attempt
    return None


def _billable(ctx: RequestContext, request: Request | None) -> tuple[Usage | None, bool]:
    """The usage to bill, and whether it was estimated: a stream cut (client gone, upstream
    failure, stream guardrail) before its final usage is billed for what was produced — the
    events relayed count as output tokens when the provider had not reported more."""
    usage = ctx.usage
    if not ctx.stream or (request is not None and request.terminal_seen):
        return usage, False
    if usage is not None and usage.has_units:
        return usage, False  # speech: its characters were known before the audio
    cut = ctx.client_disconnected or ctx.terminated_at_chunk is not None
    if not cut or ctx.stream_chunks <= 0:
        return usage, False
    if ctx.response_headers.get("X-LangWatch-Cache") == "hit":
        return usage, False  # a replay from the response cache cost nothing upstream
    produced = ctx.stream_chunks
    if usage is None:
        return Usage(input_tokens=-(-len(ctx.body_bytes()) // 4), output_tokens=produced), True
    if usage.output_tokens < produced:
        return attrs.evolve(usage, output_tokens=produced), True
    return usage, False


def record(ctx: RequestContext, state: State, request: Request | None, status: int | None) -> int:
    """Compute the call's cost and spool its ledger entry (once). Returns the cost."""
    if request is not None and request.cost is not None:
        return request.cost
    attempt = _served_by(ctx)
    usage, estimated = _billable(ctx, request) if attempt is not None else (None, False)
    if attempt is None or usage is None:
        cost = 0
    else:
        instance = ctx.gateway.instances.get(attempt.provider)
        config = instance.config if instance is not None else None
        model = attempt.model or ctx.resolved_model or ctx.model
        found = state.prices(model, config, attempt.provider_type)
        prices = state.priced(model, found)
        cost = 0 if prices is None else cost_micros(usage, prices)
        principal = ctx.principal
        if state.outbox is not None and principal is not None:
            at_us = ctx.started_unix_ns // 1000
            state.outbox.record(
                {
                    "request_id": ctx.request_id,
                    "created_at": format_us(at_us),
                    "organization_id": principal.organization_id,
                    "team_id": principal.team_id,
                    "project_id": principal.project_id,
                    "vk_id": principal.key_id,
                    "principal_id": principal.principal_id,
                    "end_user_id": end_user_of(ctx),
                    "provider_id": attempt.provider,
                    "model": model,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_input_tokens": usage.cache_read_input_tokens,
                    "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                    "reasoning_tokens": usage.reasoning_tokens,
                    "cost_micro_usd": cost,
                    "status": status,
                    "usage_estimated": estimated,
                },
                at_us,
            )
        if not estimated and state.settings.output_estimate == "recent_average":
            average = state.averages.get(model)
            if average is None and len(state.averages) < CACHE_LIMIT:
                average = state.averages[model] = Average()
            if average is not None:
                average.add(billed_output_tokens(usage))
    if request is None:
        request = Request()
        ctx.stash[REQUEST] = request
    request.cost = cost
    request.spooled = True
    ctx.cost_micros = cost
    return cost


@hookimpl
def post_guardrail(ctx: RequestContext, response: ResponseView) -> None:
    """A complete non-streaming answer, before the client sees it: spool its ledger entry."""
    state: State | None = ctx.gateway.stash.get(STATE)
    if state is not None and ctx.usage is not None and ctx.principal is not None:
        record(ctx, state, ctx.stash.get(REQUEST), response.status)
    return None


@hookimpl
def on_stream_chunk(ctx: RequestContext, chunk: bytearray) -> None:
    """The chunk that ends a stream, before the client sees it: spool its ledger entry."""
    if ctx.usage is None:
        return None
    terminal = TERMINAL.get(ctx.endpoint)
    if terminal is None or not ends_stream(chunk, terminal):
        return None
    state: State | None = ctx.gateway.stash.get(STATE)
    if state is None or ctx.principal is None:
        return None
    request = ctx.stash.get(REQUEST)
    if request is None:
        request = Request()
        ctx.stash[REQUEST] = request
    if request.cost is None:
        request.terminal_seen = True
        record(ctx, state, request, ctx.status)
    return None


@hookimpl(tryfirst=True)
async def account(ctx: RequestContext) -> None:
    """Record the call (if not yet) and settle its reservations to the actual cost."""
    state: State | None = ctx.gateway.stash.get(STATE)
    if state is None:
        return
    request = ctx.stash.get(REQUEST)
    cost = record(ctx, state, request, ctx.status)
    if cost:
        ctx.span_attributes["langwatch.cost_usd"] = cost / 1_000_000
    request = ctx.stash.get(REQUEST)
    if request is not None and request.unseen:
        state.journal.add(request.unseen, cost)
        request.unseen = []
    if request is None or not request.counters:
        return
    counters = request.counters
    costs = [cost] * len(counters)
    store = state.store
    if isinstance(store, LocalStore):
        store.settle([c.ident for c in counters], ctx.request_id, costs)
        return
    keys = [c.keys for c in counters]
    if not state.policy.available():
        settle_later(state, ctx.request_id, keys, costs)  # the heartbeat retries it
        return
    # Queued: one pipeline for every request settling just now, off the request's path. A
    # settlement Redis does not take is retried by the heartbeat (settle.lua is idempotent).
    assert state.facility is not None
    script_keys, args = store.settle_call(keys, ctx.request_id, costs)
    settlements(state.facility).put(
        store.settle_script,
        script_keys,
        args,
        then=partial(_settled, state, ctx.request_id, keys, costs),
    )


def _settled(
    state: State, request_id: str, keys: list[tuple[str, str]], costs: list[int], outcome: Any
) -> None:
    """A queued settlement's reply (or the exception its call raised)."""
    if isinstance(outcome, BACKEND_ERRORS):
        state.policy.failed(outcome, "settlement")
        settle_later(state, request_id, keys, costs)
        return
    if isinstance(outcome, BaseException):
        settle_later(state, request_id, keys, costs)
        raise outcome
    state.leases.pop(request_id, None)
    state.policy.ok()
