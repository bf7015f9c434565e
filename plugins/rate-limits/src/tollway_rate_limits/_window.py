"""The admission algorithm, in process: the Python twin of ``acquire.lua`` / ``settle.lua``.

Two kinds of window:

* **Sliding-window log** (``rpm``, ``tpm``): every admission is an entry ``(time_ms, member)``
  whose member ends in ``|<weight>`` (1 for a request, the token estimate for ``tpm``), plus a
  running total of the weights. A request of weight ``c`` is admitted at time ``t`` iff the
  weights of the entries in the half-open window ``(t - W, t]`` plus ``c`` stay within the
  limit, so no window of length ``W`` ever holds more than the limit. When it is refused, the
  wait is exact: walk the entries oldest first until enough weight would have left, and answer
  ``that entry's time + W - t``. Expired entries are pruned on each decision (each entry is
  added once and removed once, so a decision is amortised O(1)); only a refusal walks the log.
* **Calendar day** (``rpd``): a counter tagged with the UTC day number; it resets at 00:00 UTC
  and a refusal waits until then.

A decision covers every dimension of one scope (a key, or a provider) at once and is
all-or-nothing: if any dimension refuses, nothing is taken, and the refusal reported is the
dimension with the longest wait (the honest time until the request could pass).

Both backends implement exactly this; ``tests/test_rate_limits_window.py`` checks the properties
on this class with hypothesis and checks that the Lua script agrees with it on real Redis.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Literal

import attrs

__all__ = ["DAY_MS", "NEVER", "Decision", "LocalStore", "Spec", "member", "weight_of"]

DAY_MS = 86_400_000
#: ``retry_ms`` of a refusal that waiting cannot fix (the request alone exceeds the limit).
NEVER = -1


@attrs.frozen
class Spec:
    """One dimension of one admission decision."""

    dimension: str  # "rpm" | "rpd" | "tpm"
    kind: Literal["log", "day"]
    #: Storage keys: ``(log, total)`` for a sliding log, ``(counter,)`` for a day.
    keys: tuple[str, ...]
    limit: int
    cost: int


@attrs.frozen
class Decision:
    """The outcome of one admission decision."""

    admitted: bool
    #: The decision's clock (ms since the epoch; Redis ``TIME`` on the Redis backend).
    now_ms: int
    #: Admitted: the headroom left per spec, in spec order (may be negative after a settle).
    remaining: tuple[int, ...] = ()
    #: Refused: the index of the refusing spec, the wait in ms (``NEVER``: waiting won't help)
    #: and how much of that dimension was in use.
    index: int = -1
    retry_ms: int = 0
    used: int = 0


def member(member_id: str, weight: int) -> str:
    """A log entry's member: unique per request, carrying its weight."""
    return f"{member_id}|{weight}"


def weight_of(entry: str) -> int:
    """The weight a log member carries (0 when it carries none)."""
    _, sep, tail = entry.rpartition("|")
    return int(tail) if sep and tail.isdigit() else 0


def _worse(retry: int, than: int | None) -> bool:
    if than is None:
        return True
    if than == NEVER:
        return False
    return retry == NEVER or retry > than


class _Entry:
    __slots__ = ("member", "time_ms")

    def __init__(self, time_ms: int, member: str) -> None:
        self.time_ms = time_ms
        self.member = member


class _Log:
    __slots__ = ("entries", "index", "total")

    def __init__(self) -> None:
        #: Oldest first (times never decrease: the store's clock is clamped to be monotonic).
        self.entries: deque[_Entry] = deque()
        self.index: dict[str, _Entry] = {}
        self.total = 0

    def prune(self, cutoff: int) -> None:
        """Drop the entries at or before ``cutoff`` (they left the window)."""
        entries = self.entries
        while entries and entries[0].time_ms <= cutoff:
            entry = entries.popleft()
            del self.index[entry.member]
            self.total -= weight_of(entry.member)
        if not entries:
            self.total = 0

    def retry_ms(self, need: int, now: int, window: int) -> int:
        """How long until ``need`` weight has left the window."""
        freed = 0
        for entry in self.entries:
            freed += weight_of(entry.member)
            if freed >= need:
                return entry.time_ms + window - now
        return window


class LocalStore:
    """Counters in this process's memory: the backend without ``GATEWAY_REDIS_URL``.

    Single-threaded by construction (every call runs on the event loop without awaiting), so a
    decision is atomic exactly like one Lua script. Keys that went idle are swept lazily, once
    per window.
    """

    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}
        self._days: dict[str, tuple[int, int]] = {}
        self._last_now = 0
        self._last_sweep = 0

    def now_ms(self) -> int:
        """Wall-clock ms (UTC-aligned, for ``rpd``), never going backwards."""
        now = time.time_ns() // 1_000_000
        if now < self._last_now:
            now = self._last_now
        self._last_now = now
        return now

    def acquire(
        self, specs: Sequence[Spec], member_id: str, window_ms: int, now_ms: int | None = None
    ) -> Decision:
        """Check every spec and, if all pass, take them all (see the module docstring)."""
        now = self.now_ms() if now_ms is None else now_ms
        if now - self._last_sweep > window_ms:
            self._sweep(now, window_ms)
        day = now // DAY_MS
        next_midnight = (day + 1) * DAY_MS
        cutoff = now - window_ms
        used: list[int] = []
        worst = -1
        worst_retry: int | None = None
        for i, spec in enumerate(specs):
            retry: int | None = None
            if spec.kind == "log":
                log = self._logs.get(spec.keys[0])
                u = 0
                if log is not None:
                    log.prune(cutoff)
                    u = log.total
                if u + spec.cost > spec.limit:
                    if spec.cost > spec.limit:
                        retry = NEVER
                    else:
                        assert log is not None
                        retry = log.retry_ms(u + spec.cost - spec.limit, now, window_ms)
            else:
                d, n = self._days.get(spec.keys[0], (-1, 0))
                u = n if d == day else 0
                if u + spec.cost > spec.limit:
                    retry = NEVER if spec.cost > spec.limit else next_midnight - now
            used.append(u)
            if retry is not None and _worse(retry, worst_retry):
                worst, worst_retry = i, retry
        if worst_retry is not None:
            return Decision(False, now, index=worst, retry_ms=worst_retry, used=used[worst])
        remaining = []
        for spec, u in zip(specs, used, strict=True):
            if spec.kind == "log":
                log = self._logs.get(spec.keys[0])
                if log is None:
                    log = self._logs[spec.keys[0]] = _Log()
                entry = _Entry(now, member(member_id, spec.cost))
                log.entries.append(entry)
                log.index[entry.member] = entry
                log.total += spec.cost
            else:
                self._days[spec.keys[0]] = (day, u + spec.cost)
            remaining.append(spec.limit - u - spec.cost)
        return Decision(True, now, remaining=tuple(remaining))

    def settle(self, keys: Sequence[str], old: str, new: str, delta: int) -> bool:
        """Replace a log entry's weight (``new`` empty: remove it). False if it already left."""
        log = self._logs.get(keys[0])
        if log is None:
            return False
        entry = log.index.pop(old, None)
        if entry is None:
            return False
        if new:
            entry.member = new
            log.index[new] = entry
        else:
            log.entries.remove(entry)
        log.total += delta
        return True

    def used(self, keys: Sequence[str], kind: str, window_ms: int, now_ms: int) -> int:
        """What a dimension holds at ``now_ms`` (for tests and introspection)."""
        if kind == "log":
            log = self._logs.get(keys[0])
            if log is None:
                return 0
            log.prune(now_ms - window_ms)
            return log.total
        d, n = self._days.get(keys[0], (-1, 0))
        return n if d == now_ms // DAY_MS else 0

    def _sweep(self, now: int, window_ms: int) -> None:
        self._last_sweep = now
        cutoff = now - window_ms
        idle = []
        for key, log in self._logs.items():
            log.prune(cutoff)
            if not log.entries:
                idle.append(key)
        for key in idle:
            del self._logs[key]
        day = now // DAY_MS
        for key in [k for k, (d, _) in self._days.items() if d != day]:
            del self._days[key]

    def __len__(self) -> int:
        return len(self._logs) + len(self._days)
