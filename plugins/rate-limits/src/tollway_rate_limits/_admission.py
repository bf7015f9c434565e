"""One admission decision for one scope (a key, or a provider credential), on either backend.

In process (:class:`~tollway_rate_limits._window.LocalStore`) the decision is made at once.
With Redis it is **deferred to the request's batch** (:func:`tollway.redis_batch.request_batch`):
``acquire.lua`` goes in the one pipeline the core sends at its flush point, together with the
other plugins' admission calls, and the decision is applied in the call's continuation.

Putting back this replica's journal of the scope (``heal.lua``, :mod:`._journal`) costs no
round trip of its own when it is known to be due: its call is deferred just ahead of the
admission, so the pipeline runs it first — for a scope with entries admitted fail-open (a
*dirty* scope), and for a scope this replica has not decided on through Redis for most of a
window (new to it, or idle: the replica's field in the epoch hash has expired, and the script
would ask for the put-back first). The rare path left makes its own round trips in the
continuation: Redis lost its data meanwhile (the script's "heal first" reply), so the journal
is put back and the admission asked again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from tollway import RequestContext, StashKey
from tollway.redis import BACKEND_ERRORS, FailurePolicy, RedisFacility
from tollway.redis_batch import RequestBatch, request_batch
from tollway_rate_limits._journal import Journal, epoch_key
from tollway_rate_limits._limits import ScopeSpecs
from tollway_rate_limits._metrics import REDIS_ERRORS
from tollway_rate_limits._redis import HealFirst, RedisStore
from tollway_rate_limits._settings import RateLimitSettings
from tollway_rate_limits._window import Decision, LocalStore, Spec

__all__ = ["State", "decide", "failure_policy"]

log = logging.getLogger("tollway.rate_limits")


def failure_policy(settings: RateLimitSettings) -> FailurePolicy:
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
class State:
    """The plugin's state on the gateway."""

    settings: RateLimitSettings
    store: LocalStore | RedisStore
    window_ms: int
    policy: FailurePolicy = attrs.field(
        default=attrs.Factory(lambda self: failure_policy(self.settings), takes_self=True)
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

    #: Each key's :class:`ScopeSpecs`, derived once per principal (``Principal.derive``).
    key_scope: StashKey[ScopeSpecs] = attrs.field(
        factory=lambda: StashKey("tollway-rate-limits.key-scope")
    )
    #: Each provider credential's :class:`ScopeSpecs`, by its key and limits.
    provider_scopes: dict[tuple[str, int | None, int | None, int | None], ScopeSpecs] = attrs.field(
        factory=dict
    )

    @property
    def redis(self) -> bool:
        return isinstance(self.store, RedisStore)

    def settled(self, outcome: Any) -> None:
        """A queued settlement's continuation: a Redis error counts and backs off (the
        reservation expires with its window)."""
        if isinstance(outcome, BACKEND_ERRORS):
            self.policy.failed(outcome, "settlement")


#: What to do with a decision; ``None`` means "Redis is down and the policy is fail_open".
Decided = Callable[[Decision | None], None]


def decide(ctx: RequestContext, state: State, specs: Sequence[Spec], then: Decided) -> None:
    """One atomic decision over ``specs`` for the request, handed to ``then``.

    In process, ``then`` runs now. With Redis, the decision is deferred to the request's batch
    and ``then`` runs in the call's continuation, after the core's flush (a refusal it raises
    refuses the request there). While Redis is failing (the policy's back-off) nothing is
    deferred: ``fail_closed`` raises here, ``fail_open`` calls ``then(None)`` now."""
    store = state.store
    member_id = ctx.request_id
    if isinstance(store, LocalStore):
        then(store.acquire(specs, member_id, state.window_ms))
        return
    policy = state.policy
    if not policy.available():
        _without_redis(state, specs, member_id)
        then(None)
        return
    assert state.facility is not None
    journal = state.journal
    epoch = epoch_key(specs)
    batch = request_batch(ctx, state.facility)
    if epoch in journal.dirty or not journal.fresh(epoch):
        # Put back what Redis may miss in the same round trip, ahead of the decision: entries
        # admitted fail-open, or — the scope new to this replica or idle for a window (its
        # epoch field expired) — nothing but the field, which acquire.lua would ask for first.
        _defer_heal(batch, state, store, epoch)
    keys, args = store.acquire_call(
        specs, member_id, state.window_ms, node_id=journal.node_id, epoch=epoch
    )

    async def decided(outcome: Any) -> None:
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            try:
                decision = store.decision(outcome, epoch)
            except HealFirst:
                await heal(state, store, epoch, lost=True)
                decision = await store.acquire(
                    specs, member_id, state.window_ms, node_id=journal.node_id, epoch=epoch
                )
        except BACKEND_ERRORS as exc:
            policy.failed(exc, "admission")
            _without_redis(state, specs, member_id)
            then(None)
            return
        policy.ok()
        journal.mark(epoch)
        if decision.admitted:
            journal.record(
                specs, member_id, decision.now_ms, fail_open=False, remaining=decision.remaining
            )
        else:
            journal.observe(specs[decision.index], decision.now_ms, decision.used)
        then(decision)

    batch.defer(store.acquire_script, keys, args, then=decided)


def _without_redis(state: State, specs: Sequence[Spec], member_id: str) -> None:
    """``fail_closed``: raise the 503; ``fail_open``: admit, journaled to put back later."""
    state.policy.refuse()
    state.journal.record(specs, member_id, None, fail_open=True)


def _defer_heal(batch: RequestBatch, state: State, store: RedisStore, epoch: str) -> None:
    """Put back this replica's journal of the scope in the same pipeline as (and just ahead
    of) the scope's next admission; ``heal.lua`` finds out by itself whether Redis lost the
    scope's data (the replica's field in the epoch hash is gone)."""
    journal = state.journal
    dirty = epoch in journal.dirty
    journal.dirty.discard(epoch)
    logs, days = journal.entries(epoch), journal.day_counts(epoch)
    keys, args = store.heal_call(
        epoch, journal.node_id, logs, state.window_ms, lost=False, days=days, only_if_lost=not dirty
    )
    if not dirty:
        # One put-back per scope: the decisions deferred meanwhile (a burst on a scope that was
        # idle) go without; this one writes nothing unless Redis lost the data, which a later
        # decision's acquire.lua would find out by itself. (Entries admitted fail-open are not
        # marked so: should this request end before its flush, the next one puts them back.)
        journal.mark(epoch)

    def healed(outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            # Put back on a later decision; the admission's continuation applies the policy.
            journal.marked.pop(epoch, None)
            if dirty:
                journal.dirty.add(epoch)
            return
        _restored(state, epoch, int(outcome))

    batch.defer(store.heal_script, keys, args, then=healed)


def _restored(state: State, epoch: str, restored: int) -> None:
    state.journal.restored += restored
    if restored:
        log.info("rate_limit_window_restored scope=%s entries=%d", epoch, restored)


async def heal(state: State, store: RedisStore, epoch: str, *, lost: bool) -> None:
    """Put back this replica's journal for one scope now (one put-back per scope at a time;
    the scope's other decisions wait for it)."""
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
            logs, days = journal.entries(epoch), journal.day_counts(epoch)
            node = journal.node_id
            restored = await store.heal(epoch, node, logs, state.window_ms, lost=lost, days=days)
        except BaseException:
            journal.dirty.add(epoch)
            raise
        _restored(state, epoch, restored)
    finally:
        del journal.replaying[epoch]
        future.set_result(None)
