"""Admission: seed the counters, check and reserve in one atomic step, refuse or warn.

With Redis the atomic step (admit.lua) is not a round trip of its own: it is deferred to the
request's batch (:mod:`tollway.redis_batch`), sent in one pipeline with the other plugins'
calls at the core's flush point, and decided in the continuation (:class:`_Admitting`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import attrs

from tollway import BudgetExceeded, RequestContext, hookimpl
from tollway.redis import BACKEND_ERRORS
from tollway.redis_batch import request_batch
from tollway_budgets._budgets import Counter, end_user_of
from tollway_budgets._client import ControlPlaneUnavailable
from tollway_budgets._estimate import estimate_request
from tollway_budgets._heal import heal
from tollway_budgets._leases import held
from tollway_budgets._metrics import BLOCKS
from tollway_budgets._plan import plan_of
from tollway_budgets._state import REQUEST, STATE, WARN_EVERY, Request, State
from tollway_budgets._store import Admission, LocalStore, RedisStore
from tollway_budgets._windows import format_us

__all__ = ["DECISION", "UNPRICED", "WARNING_HEADER", "admit"]

log = logging.getLogger("tollway.budgets")

WARNING_HEADER = "X-LangWatch-Budget-Warning"
#: Endpoints that cost nothing through the gateway: never reserved against, never refused by
#: an exhausted budget (they stay rate-limited). Token counting and moderation are free
#: upstream; a realtime secret's session is billed by the provider to the call it opens.
UNPRICED = frozenset({"count_tokens", "moderations", "realtime_client_secrets", "stored_responses"})
DECISION = "langwatch.budget.decision"


async def _seed(state: State, counters: Sequence[Counter], *, reseed: bool) -> None:
    """Seed counters with the ledger's spend for their window plus this replica's entries not
    yet in the ledger; one seed per counter at a time (concurrent requests wait for it)."""
    loop = asyncio.get_running_loop()
    waits = [state.seeding[c.ident] for c in counters if c.ident in state.seeding]
    todo = [c for c in counters if c.ident not in state.seeding]
    if todo:
        future: asyncio.Future[None] = loop.create_future()
        for c in todo:
            state.seeding[c.ident] = future
        try:
            await _do_seed(state, todo, reseed=reseed)
        finally:
            future.set_result(None)
            for c in todo:
                if state.seeding.get(c.ident) is future:
                    del state.seeding[c.ident]
    for wait in waits:
        await asyncio.shield(wait)


async def _do_seed(state: State, counters: Sequence[Counter], *, reseed: bool) -> None:
    outbox = state.outbox
    provisional = 0
    lock = outbox.lock if outbox is not None else contextlib.nullcontext()
    async with lock:  # no ledger batch half-way: an entry is pending or in the ledger, not both
        pending = [outbox.pending_sum(c.matches) if outbox is not None else 0 for c in counters]
        ledger = [0] * len(counters)
        read_at_ms = time.time_ns() // 1_000_000
        if state.client is not None:
            try:
                ledger = await state.client.spend([c.spend_query() for c in counters])
            except ControlPlaneUnavailable as exc:
                provisional = time.time_ns() // 1_000_000 + round(
                    state.settings.seed_retry_seconds * 1000
                )
                now = time.monotonic()
                if now - state.last_seed_warning >= WARN_EVERY:
                    state.last_seed_warning = now
                    log.warning(
                        "budget_seed_failed counters=%d error=%s: counting from this replica's "
                        "own unsent spend until the control plane answers",
                        len(counters),
                        exc,
                    )
        seeds = [a + b for a, b in zip(ledger, pending, strict=True)]
        if isinstance(state.store, LocalStore):
            state.store.seed(counters, seeds, provisional, reseed=reseed)
        else:
            await state.store.seed(
                counters, seeds, provisional, reseed=reseed, read_at_ms=read_at_ms
            )


def _admit_local(
    state: State, store: LocalStore, counters: list[Counter], amounts: list[int], request_id: str
) -> Admission | Awaitable[Admission]:
    """One admission on the in-process counters (seeding missing ones first: then awaitable)."""
    ttl_ms, retry_ms = state.ttl_ms, state.retry_ms
    now_ms = time.time_ns() // 1_000_000
    if now_ms - state.last_purge > 60_000:
        state.last_purge = now_ms
        store.purge(now_ms)
    admission = store.admit(counters, amounts, request_id, now_ms, ttl_ms, retry_ms)
    if admission.status != "seed":
        return admission

    async def seeded() -> Admission:
        await _seed(state, [counters[i] for i in admission.missing], reseed=False)
        return store.admit(counters, amounts, request_id, now_ms, ttl_ms, retry_ms)

    return seeded()


@attrs.define(eq=False)
class _Admitting:
    """One request's admission in Redis, deferred to the request's batch
    (:mod:`tollway.redis_batch`): called with admit.lua's reply (or the exception its call
    raised) after the batch's round trip, it decides — on the rare path of counters to seed,
    after further round trips of its own."""

    ctx: RequestContext
    state: State
    store: RedisStore
    request: Request
    counters: list[Counter]
    amounts: list[int]
    meta: bytes
    at_us: int

    def __call__(self, outcome: Any) -> Awaitable[None] | None:
        state = self.state
        if isinstance(outcome, BaseException):
            self._failed(outcome)
            return None
        admission = RedisStore.admission(outcome)
        if admission.status == "seed":
            return self._seed_and_admit(admission)
        held(state, self.ctx.request_id, self.counters, admission)
        state.policy.ok()
        _decide(self.ctx, state, self.request, admission, self.at_us)
        return None

    def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, BACKEND_ERRORS):
            raise exc
        self.state.policy.failed(exc, "admission")
        self.state.policy.refuse()
        _fail_open(self.ctx, self.state, self.request)

    async def _seed_and_admit(self, admission: Admission) -> None:
        state, store, counters, rid = self.state, self.store, self.counters, self.ctx.request_id
        lease_ms, retry_ms = state.lease_ms, state.retry_ms
        try:
            for _ in range(2):
                if admission.status != "seed":
                    break
                held(state, rid, counters, admission)
                await _seed(state, [counters[i] for i in admission.missing], reseed=False)
                admission = await store.admit(
                    counters, self.amounts, rid, None, lease_ms, retry_ms, self.meta
                )
            held(state, rid, counters, admission)
        except BACKEND_ERRORS as exc:
            self._failed(exc)
            return
        state.policy.ok()
        _decide(self.ctx, state, self.request, admission, self.at_us)


async def _reseed(state: State, counters: list[Counter]) -> None:
    try:
        await _seed(state, counters, reseed=True)
    except BACKEND_ERRORS as exc:
        state.policy.failed(exc, "seed")


def _usd(micros: int) -> str:
    whole, frac = divmod(micros, 1_000_000)
    text = f"{whole}.{frac:06d}".rstrip("0")
    head, _, tail = text.partition(".")
    return f"${head}.{tail.ljust(2, '0')}"


def _percent(spent: int, limit: int) -> int:
    if limit <= 0:
        return 100 if spent >= 0 else 0
    return spent * 100 // limit


def _refusal(counter: Counter, spent: int, reserved: int, at_us: int) -> BudgetExceeded:
    budget = counter.budget
    named = f" {budget.name!r}" if budget.name else ""
    in_flight = f" (+{_usd(reserved)} reserved by calls in flight)" if reserved else ""
    until = counter.until_us
    if until is None:
        when = "it does not reset by itself (a total budget)"
        retry: float | None = None
    else:
        when = f"it resets at {format_us(until)[:19]}Z"
        retry = max(1.0, (until - at_us) / 1_000_000)
    subject = (
        f"end user {counter.scope_value!r}" if budget.scope_type == "end_user" else budget.scope_id
    )
    return BudgetExceeded(
        f"budget exceeded: {budget.label}{named} for {subject} has spent "
        f"{_usd(spent)}{in_flight} of its {_usd(budget.limit)} limit; {when}. Ask the operator "
        f"to raise it (tollway gateway-budgets update {budget.id} --limit USD)"
        + (
            "" if until is not None else f" or reset it (tollway gateway-budgets reset {budget.id})"
        ),
        code="budget_exceeded",
        retry_after=retry,
    )


def _fail_open(ctx: RequestContext, state: State, request: Request) -> None:
    """Admitted without a budget decision (Redis unreachable, counters that keep vanishing)."""
    if state.redis:
        request.unseen = request.counters  # its cost goes to the journal (_heal)
    request.counters = []  # nothing was reserved
    ctx.span_attributes[DECISION] = "fail_open"


def _decide(
    ctx: RequestContext, state: State, request: Request, admission: Admission, at_us: int
) -> None:
    """The admission's outcome for the request: allowed (with warnings), or refused."""
    if admission.status == "seed":
        _fail_open(ctx, state, request)  # counters keep vanishing (Redis evicting?)
        return
    counters = request.counters
    if admission.reseed:
        state.spawn(_reseed(state, [counters[i] for i in admission.reseed]))
    if admission.status != "ok":
        request.counters = []  # nothing was reserved
    threshold = state.settings.warn_percent
    if admission.status == "blocked":
        counter = counters[admission.index]
        spent, reserved = admission.spent[0], admission.reserved[0]
        BLOCKS.labels(counter.budget.scope_type).inc()
        pct = _percent(spent + reserved, counter.budget.limit)
        ctx.response_headers[WARNING_HEADER] = f"{counter.budget.scope_type}:{pct}"
        ctx.span_attributes[DECISION] = "block"
        ctx.span_attributes["langwatch.budget.scope"] = counter.budget.label
        ctx.span_attributes["langwatch.budget.id"] = counter.budget.id
        raise _refusal(counter, spent, reserved, at_us)
    warnings = []
    warned: list[str] = []
    for counter, spent, reserved in zip(counters, admission.spent, admission.reserved, strict=True):
        pct = _percent(spent + reserved, counter.budget.limit)
        if pct >= threshold:
            warnings.append(f"{counter.budget.scope_type}:{pct}")
            warned.append(counter.budget.id)
    if warnings:
        ctx.response_headers[WARNING_HEADER] = ",".join(warnings)
        ctx.span_attributes[DECISION] = "warn"
        ctx.span_attributes["langwatch.budget.id"] = ",".join(warned)
    else:
        ctx.span_attributes[DECISION] = "allow"


@hookimpl(trylast=True)
async def admit(ctx: RequestContext) -> None:
    """Budget precheck and reservation (after every other admission check). With Redis the
    reservation goes in the request's batch (one round trip with the other plugins' calls) and
    the decision is made when its reply is in (:class:`_Admitting`)."""
    principal = ctx.principal
    if principal is None or ctx.endpoint in UNPRICED:
        return
    raw = principal.extras.get("budgets")
    if not raw:
        return
    state: State | None = ctx.gateway.stash.get(STATE)
    if state is None:
        return
    plan = plan_of(state, principal, raw)
    if not plan.budgets:
        return
    end_user = end_user_of(ctx) if plan.end_users else None
    at_us = ctx.started_unix_ns // 1000
    counters = plan.counters_at(
        principal, end_user, at_us, state.settings.redis_key_prefix, state.grace_ms
    )
    if not counters:
        return
    # One estimate per distinct default_max_output_tokens among the budgets (usually one).
    bound = counters[0].budget.default_max_output_tokens
    first = estimate_request(ctx, state, principal, bound, plan)
    amounts = [first] * len(counters)
    for i, counter in enumerate(counters):
        other = counter.budget.default_max_output_tokens
        if other != bound:
            amounts[i] = estimate_request(ctx, state, principal, other, plan)
    # Recorded before the round trip: if the client leaves while it runs (or before it was
    # made), or another plugin refuses the request, `account` (which always runs) releases
    # whatever the script reserved — settling a reservation that was never made changes
    # nothing.
    request = Request(counters, amounts)
    ctx.stash[REQUEST] = request
    store = state.store
    if isinstance(store, LocalStore):
        admission = _admit_local(state, store, counters, amounts, ctx.request_id)
        if not isinstance(admission, Admission):
            admission = await admission
        _decide(ctx, state, request, admission, at_us)
        return
    if not state.policy.available():
        state.policy.refuse()
        _fail_open(ctx, state, request)
        return
    if state.journal.due:
        # Redis answers again: count what was admitted without it first (a round trip of its
        # own, once after an outage).
        try:
            await heal(state, store, state.journal)
        except BACKEND_ERRORS as exc:
            state.policy.failed(exc, "admission")
            state.policy.refuse()
            _fail_open(ctx, state, request)
            return
    meta = plan.meta(format_us(at_us), end_user, ctx.model)
    keys, args = store.admit_call(
        counters, amounts, ctx.request_id, None, state.lease_ms, state.retry_ms, meta
    )
    assert state.facility is not None
    request_batch(ctx, state.facility).defer(
        store.admit_script,
        keys,
        args,
        then=_Admitting(ctx, state, store, request, counters, amounts, meta, at_us),
    )
