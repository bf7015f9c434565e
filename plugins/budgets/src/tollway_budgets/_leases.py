"""Reservations that outlive their replica, with Redis: leases, the heartbeat that renews
them, settlements retried until Redis answers, and reclaimed reservations billed to the ledger.

A reservation in Redis carries a lease (``reservation_lease_seconds``, 10 s), not a 900 s
expiry. While its request runs, the replica renews the lease every third of that
(:func:`heartbeat`); a replica that died (``kill -9``, a lost host) stops renewing, and the next
admission on the counter, on any replica, reclaims the reservation (admit.lua): its amount
moves from ``reserved`` to ``spent`` and :func:`bill_reclaimed` writes the request to the ledger
at that amount, marked ``usage_estimated`` — the reservation is the documented upper bound of
what the request could cost (the ledger keeps one entry per request id: if the dead replica's
own entry got there first, it stands). A settlement that failed (Redis timed out) is retried
by the heartbeat, and its lease is renewed meanwhile, so the reservation is released as soon
as Redis answers again — not 900 s later — and never reclaimed as if its replica had died.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from tollway.redis import BACKEND_ERRORS
from tollway_budgets._budgets import Counter
from tollway_budgets._heal import heal
from tollway_budgets._state import State
from tollway_budgets._store import Admission, RedisStore

__all__ = ["bill_reclaimed", "heartbeat", "held", "settle_later"]

log = logging.getLogger("tollway.budgets")


def held(state: State, request_id: str, counters: list[Counter], admission: Admission) -> None:
    """An admission reserved on ``counters``: renew its lease until it settles; bill what it
    reclaimed of dead replicas' reservations."""
    if admission.status == "ok" and isinstance(state.store, RedisStore):
        state.leases[request_id] = ([c.zset_key for c in counters], time.monotonic())
    if admission.reclaimed:
        bill_reclaimed(state, admission.reclaimed)


def bill_reclaimed(state: State, reclaimed: tuple[tuple[str, int, str], ...]) -> None:
    """Ledger entries for reservations reclaimed from replicas that stopped renewing them:
    each request at its reservation, ``usage_estimated`` (once per request id)."""
    for request_id, amount, meta in reclaimed:
        try:
            described: dict[str, Any] = orjson.loads(meta) if meta else {}
        except orjson.JSONDecodeError:
            described = {}
        log.warning(
            "budget_reservation_reclaimed request_id=%s amount_micro_usd=%d replica=%s: its "
            "replica stopped renewing it (died?); billed at the reservation, marked estimated",
            request_id,
            amount,
            described.get("gateway_node_id", "?"),
        )
        outbox = state.outbox
        if outbox is None or not described.get("created_at"):
            continue
        entry = {
            **described,
            "request_id": request_id,
            "provider_id": None,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "reasoning_tokens": 0,
            "cost_micro_usd": amount,
            "status": None,
            "usage_estimated": True,
        }
        outbox.record(entry, time.time_ns() // 1000)


def settle_later(
    state: State, request_id: str, keys: list[tuple[str, str]], costs: list[int]
) -> None:
    """A settlement Redis did not take: the heartbeat retries it (renewing the lease
    meanwhile)."""
    state.unsettled.setdefault(request_id, (keys, costs, time.monotonic()))


async def heartbeat(state: State) -> None:
    """Every third of the lease: replay fail-open spend (:mod:`tollway_budgets._heal`), retry
    failed settlements, renew this replica's leases."""
    store = state.store
    assert isinstance(store, RedisStore)
    lease = state.settings.reservation_lease_seconds
    lease_ms = round(lease * 1000)
    while True:
        await asyncio.sleep(lease / 3)
        if not (state.leases or state.unsettled or state.journal.due):
            continue
        if not state.policy.available():
            continue
        try:
            if state.journal.due:
                await heal(state, store, state.journal)
            await _retry_settlements(state, store)
            groups: dict[str, list[str]] = {}
            oldest = time.monotonic() - state.settings.reservation_ttl_seconds
            for request_id, (zsets, since) in list(state.leases.items()):
                if since < oldest:
                    # Held this long without settling (a request that never ended?): stop
                    # renewing; the reservation is reclaimed like a dead replica's.
                    del state.leases[request_id]
                    continue
                for z in zsets:
                    groups.setdefault(z, []).append(request_id)
            if groups:
                await store.renew(groups, lease_ms)
        except BACKEND_ERRORS as exc:
            state.policy.failed(exc, "reservation heartbeat")
            continue
        state.policy.ok()


async def _retry_settlements(state: State, store: RedisStore) -> None:
    give_up = time.monotonic() - state.settings.reservation_ttl_seconds
    for request_id, (keys, costs, since) in list(state.unsettled.items()):
        if since < give_up:
            # Redis has refused it this long: let the lease lapse (the reservation is then
            # reclaimed; the ledger already has the request's own entry).
            del state.unsettled[request_id]
            state.leases.pop(request_id, None)
            continue
        await store.settle(keys, request_id, costs)
        del state.unsettled[request_id]
        state.leases.pop(request_id, None)
