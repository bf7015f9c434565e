"""Counters that heal after a Redis outage in which Redis kept its data.

While Redis is unreachable and the budgets fail open, calls are admitted without the counters
and their cost reaches the ledger — but not the Redis counter that blocks. Each replica keeps a
journal of that spend (:class:`Journal`: per counter, the cost per second) and *replays* it
into Redis (heal.lua) as soon as Redis answers again, before its next admission uses the
counters: the replica's next admission waits for the replay (one at a time; the others wait
for it too), so no admission decision relies on a counter that is missing this replica's
fail-open spend.

The replay is idempotent (a per-replica batch marker in the counter), and skips counters that
Redis lost — those are seeded from the ledger (plus this replica's unsent entries), which
already holds the spend. A counter seeded *during* the outage (by a replica that reached Redis
first) holds what reached the ledger before its seed: only spend journaled in the seconds
before that, within the outbox's flush interval, is added again.

What is not healed: the journal lives in the replica's memory. A replica that dies before it
replays takes its fail-open spend with it until the counter is next seeded from the ledger
(a new window, or the counter expiring).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from tollway_budgets._budgets import Counter
from tollway_budgets._store import RedisStore

if TYPE_CHECKING:
    from tollway_budgets._state import State

__all__ = ["Journal", "heal"]

log = logging.getLogger("tollway.budgets")

#: A journal holds at most this many seconds per counter (older seconds merge into the oldest).
_MAX_SECONDS = 3600


@attrs.define(eq=False)
class _Batch:
    marker: str
    #: hash key → [(second's end ms, amount), ...]
    spend: dict[str, list[tuple[int, int]]]


@attrs.define(eq=False)
class Journal:
    """What this replica admitted fail-open and Redis has not counted yet."""

    node_id: str
    #: hash key → {second (epoch s) → micro-USD}
    pending: dict[str, dict[int, int]] = attrs.field(factory=dict)
    #: Batches taken from ``pending`` whose replay has not been confirmed (retried as-is).
    batches: list[_Batch] = attrs.field(factory=list)
    sequence: int = 0
    replaying: asyncio.Future[None] | None = None
    #: Micro-USD replayed into Redis so far (diagnostics, tests).
    replayed: int = 0

    @property
    def due(self) -> bool:
        return bool(self.pending or self.batches)

    def add(self, counters: Sequence[Counter], cost: int, at_ms: int | None = None) -> None:
        """A call admitted fail-open cost ``cost`` on each of ``counters``."""
        if cost <= 0:
            return
        second = (time.time_ns() // 1_000_000 if at_ms is None else at_ms) // 1000
        for counter in counters:
            seconds = self.pending.setdefault(counter.hash_key, {})
            if second not in seconds and len(seconds) >= _MAX_SECONDS:
                second = min(seconds)
            seconds[second] = seconds.get(second, 0) + cost

    def take(self) -> None:
        """Move ``pending`` into a new batch with its own marker."""
        if not self.pending:
            return
        self.sequence += 1
        spend = {
            key: sorted(((s + 1) * 1000 - 1, amount) for s, amount in seconds.items())
            for key, seconds in self.pending.items()
        }
        self.batches.append(_Batch(f"{self.node_id}:{time.time_ns()}:{self.sequence}", spend))
        self.pending = {}


async def heal(state: State, store: RedisStore, journal: Journal) -> None:
    """Replay the journal into Redis (one replay at a time; a second caller waits for it).
    Raises what Redis raised (the batches stay for the next try)."""
    running = journal.replaying
    if running is not None and not running.done():
        await asyncio.shield(running)
        if not journal.due:
            return
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    journal.replaying = future
    try:
        journal.take()
        margin_ms = round(state.settings.outbox_flush_interval_seconds * 1000) + 1000
        while journal.batches:
            batch = journal.batches[0]
            added = await store.replay(batch.marker, batch.spend, margin_ms)
            journal.batches.pop(0)
            journal.replayed += added
            log.info(
                "budget_counters_healed counters=%d amount_micro_usd=%d: spend admitted "
                "fail-open while Redis was unreachable, now counted",
                len(batch.spend),
                added,
            )
    finally:
        future.set_result(None)
