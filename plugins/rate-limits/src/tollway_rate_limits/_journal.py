"""Rate-limit windows that heal: what this replica admitted, kept to put it back into Redis.

Two ways a sliding window in Redis can miss admissions:

* **Redis came back empty** (restarted without persistence, a failover to an empty replica):
  every count of the window is gone, and without more a key could pass its limit again at
  once;
* **fail-open**: while Redis was unreachable, requests were admitted without it.

So each replica keeps, per scope (a key or a provider credential) and per sliding log (rpm,
tpm), the entries it admitted in the last window — the member Redis holds (``<request
id>|<weight>``) and its admission time — and *puts them back* (heal.lua) before the scope's
next decision relies on Redis: after an outage for every scope it admitted fail-open, and
whenever Redis lost its data. The latter is detected per scope without an extra round trip:
the admission script checks the replica's field in the scope's epoch hash (``<scope>:e``), which
vanishes with the data; it asks for the journal then, and every replica puts back its own. A
put-back is idempotent (``ZADD NX``), so repeating one, or one replica's entries being still
there, changes nothing.

The calendar-day counters (``rpd``) heal the same way, by count: Redis keeps, beside a day
counter's total, each replica's own count of the day (a field ``r:<replica>``, added to by
acquire.lua), and the replica keeps its own count too (fail-open admissions included) and the
total it last saw. Putting back sets the replica's field to its count and adds the difference
to the total — idempotent, since a repeat finds nothing missing; after a loss, a placeholder
field (``~<replica>``) stands for what the others had counted as this replica last saw it,
until they put back their own.

Bounds: a journal holds one window per log, at most :data:`MAX_ENTRIES` entries (the oldest
go first), and one count per day counter (today's).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence

import attrs

from tollway_rate_limits._window import DAY_MS, Spec, member

__all__ = ["MAX_ENTRIES", "DayCount", "Journal", "Restore", "epoch_key"]

#: Entries kept per log (per scope and dimension).
MAX_ENTRIES = 100_000


def epoch_key(specs: Sequence[Spec]) -> str:
    """The scope's epoch hash: the specs' base name (they share one) + ``:e``."""
    return specs[0].keys[0].rsplit(":", 1)[0] + ":e"


@attrs.frozen
class Restore:
    """One log's put-back: the replica's last view of it, and its own entries."""

    seen_ms: int
    seen_used: int
    entries: list[tuple[int, str]]


@attrs.frozen
class DayCount:
    """One day counter's put-back: the UTC day number, this replica's own count that day, and
    the counter's total at this replica's last decision through Redis (0: none that day)."""

    day: int
    own: int
    seen: int


@attrs.define(eq=False)
class Journal:
    """Per scope (its epoch key) and log (``(sorted set, total)`` keys): member id → (time ms,
    weight), oldest first."""

    node_id: str
    window_ms: int
    logs: dict[str, dict[tuple[str, str], OrderedDict[str, tuple[int, int]]]] = attrs.field(
        factory=dict
    )
    #: Per log: when this replica last decided on it through Redis, and the log's total then
    #: (its decision included).
    seen: dict[tuple[str, str], tuple[int, int]] = attrs.field(factory=dict)
    #: Scopes with entries admitted fail-open, not yet put back.
    dirty: set[str] = attrs.field(factory=set)
    replaying: dict[str, asyncio.Future[None]] = attrs.field(factory=dict)
    #: Entries Redis took back so far (diagnostics, tests).
    restored: int = 0
    last_sweep: int = 0
    #: Per scope: when this replica last decided on it through Redis (monotonic ms). Each
    #: decision keeps the replica's field in the scope's epoch hash for a window.
    marked: dict[str, int] = attrs.field(factory=dict)
    last_mark_sweep: int = 0
    #: Per scope and day counter key: this replica's count of the day and the total it saw.
    days: dict[str, dict[str, DayCount]] = attrs.field(factory=dict)

    def mark(self, scope: str) -> None:
        """A decision on ``scope`` went through Redis (its epoch hash holds this replica)."""
        now = time.monotonic_ns() // 1_000_000
        self.marked[scope] = now
        if now - self.last_mark_sweep >= self.window_ms:
            self.last_mark_sweep = now
            cutoff = now - self.window_ms
            for old in [k for k, at in self.marked.items() if at <= cutoff]:
                del self.marked[old]

    def fresh(self, scope: str) -> bool:
        """Whether the scope's epoch hash should still hold this replica's field (a decision
        less than 0.9 window ago), so the next decision needs no put-back first — unless Redis
        lost its data, which the decision script detects. Otherwise the put-back goes first."""
        at = self.marked.get(scope)
        return at is not None and time.monotonic_ns() // 1_000_000 - at < self.window_ms * 0.9

    def record(
        self,
        specs: Sequence[Spec],
        member_id: str,
        at_ms: int | None,
        *,
        fail_open: bool,
        remaining: Sequence[int] = (),
    ) -> None:
        """An admission of ``specs`` (at ``at_ms``: Redis's clock, with the headroom Redis
        reported per spec in ``remaining``; None: fail-open, this host's clock)."""
        now = time.time_ns() // 1_000_000 if at_ms is None else at_ms
        self.sweep(now)
        scope = epoch_key(specs)
        logs = self.logs.get(scope)
        if logs is None:
            logs = self.logs[scope] = {}
        for i, spec in enumerate(specs):
            if spec.kind != "log":
                total = spec.limit - remaining[i] if i < len(remaining) else None
                self._count(scope, spec.keys[0], now, spec.cost, total)
                continue
            log_keys = (spec.keys[0], spec.keys[1])
            entries = logs.get(log_keys)
            if entries is None:
                entries = logs[log_keys] = OrderedDict()
            entries[member_id] = (now, spec.cost)
            self._prune(entries, now)
            if i < len(remaining):
                seen = self.seen.get(log_keys)
                if seen is None or seen[0] <= now:
                    self.seen[log_keys] = (now, spec.limit - remaining[i])
        if fail_open:
            self.dirty.add(scope)

    def _count(self, scope: str, key: str, now: int, cost: int, seen: int | None) -> None:
        """``cost`` more of today on day counter ``key``; ``seen``: its total then (Redis's)."""
        day = now // DAY_MS
        counts = self.days.get(scope)
        if counts is None:
            counts = self.days[scope] = {}
        count = counts.get(key)
        if count is not None and count.day > day:
            day = count.day  # this host's clock (fail-open) behind Redis's: Redis's day
        if count is None or count.day != day:
            count = DayCount(day, 0, 0)
        counts[key] = DayCount(day, count.own + cost, count.seen if seen is None else seen)

    def observe(self, spec: Spec, at_ms: int, used: int) -> None:
        """A refusal: ``spec``'s log or day counter held ``used`` at ``at_ms`` (Redis's
        clock)."""
        if spec.kind != "log":
            day = at_ms // DAY_MS
            counts = self.days.setdefault(epoch_key([spec]), {})
            count = counts.get(spec.keys[0])
            if count is None or count.day < day:
                counts[spec.keys[0]] = DayCount(day, 0, used)
            elif count.day == day:
                counts[spec.keys[0]] = attrs.evolve(count, seen=max(count.seen, used))
            return
        log_keys = (spec.keys[0], spec.keys[1])
        seen = self.seen.get(log_keys)
        if seen is None or seen[0] <= at_ms:
            self.seen[log_keys] = (at_ms, used)

    def settle(self, keys: Sequence[str], member_id: str, weight: int) -> None:
        """A tpm reservation settled to ``weight`` (0: released)."""
        logs = self.logs.get(keys[0].rsplit(":", 1)[0] + ":e")
        entries = None if logs is None else logs.get((keys[0], keys[1]))
        if entries is None or member_id not in entries:
            return
        if weight > 0:
            entries[member_id] = (entries[member_id][0], weight)
        else:
            del entries[member_id]

    def sweep(self, now: int) -> None:
        """Forget what left the window, of every scope (at most once per window)."""
        if now - self.last_sweep < self.window_ms:
            return
        self.last_sweep = now
        for scope in list(self.logs):
            logs = self.logs[scope]
            for log_keys in list(logs):
                self._prune(logs[log_keys], now)
                if not logs[log_keys]:
                    del logs[log_keys]
            if not logs:
                del self.logs[scope]
        cutoff = now - self.window_ms
        for log_keys in [k for k, (at, _) in self.seen.items() if at <= cutoff]:
            del self.seen[log_keys]
        today = now // DAY_MS
        for scope in list(self.days):
            counts = self.days[scope]
            for key in [k for k, c in counts.items() if c.day < today]:
                del counts[key]
            if not counts:
                del self.days[scope]

    def _prune(self, entries: OrderedDict[str, tuple[int, int]], now: int) -> None:
        cutoff = now - self.window_ms
        while entries:
            first = next(iter(entries.values()))
            if first[0] > cutoff and len(entries) <= MAX_ENTRIES:
                break
            entries.popitem(last=False)

    def day_counts(self, scope: str) -> dict[str, DayCount]:
        """What to put back of the scope's day counters (today's counts only)."""
        today = time.time_ns() // 1_000_000 // DAY_MS
        return {k: c for k, c in self.days.get(scope, {}).items() if c.day >= today}

    def entries(self, scope: str) -> dict[tuple[str, str], Restore]:
        """What to put back of the scope, per log."""
        now = time.time_ns() // 1_000_000
        out: dict[tuple[str, str], Restore] = {}
        for log_keys, entries in self.logs.get(scope, {}).items():
            self._prune(entries, now)
            seen_ms, seen_used = self.seen.get(log_keys, (0, 0))
            if seen_ms <= now - self.window_ms:
                self.seen.pop(log_keys, None)
                seen_ms, seen_used = 0, 0
            out[log_keys] = Restore(
                seen_ms, seen_used, [(at, member(rid, w)) for rid, (at, w) in entries.items()]
            )
        empty = [k for k, v in self.logs.get(scope, {}).items() if not v]
        for k in empty:
            del self.logs[scope][k]
        if scope in self.logs and not self.logs[scope]:
            del self.logs[scope]
        return out
