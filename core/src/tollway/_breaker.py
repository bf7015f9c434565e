"""Per-credential circuit breaker (SPEC §5): a small state machine over a sliding window.

::

    closed ──(≥ failure_threshold failures, or ≥ min_calls calls with a failure share
              ≥ failure_ratio, within window_seconds)──▶ open
    open ──(cooldown_seconds passed)──▶ half_open: exactly one probe call is let through
    half_open ──probe succeeded──▶ closed (window emptied)
    half_open ──probe failed──▶ open for another cooldown

Failures are connection errors, timeouts, 5xx, 408 and 429; any other answer (a 400 included:
the provider is up) is a success. Outcomes of calls admitted before the breaker opened that
arrive while it is open or probing are ignored: only the probe decides.

The window is kept as counts in ``_BUCKETS`` buckets (at most ``window / _BUCKETS`` seconds of
imprecision at its old edge) so its memory is fixed, whatever the request rate.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["Breaker", "BreakerSettings", "Ticket", "counts_as_failure"]

_BUCKETS = 30

#: What :meth:`Breaker.admit` hands out: an ordinary call, or the one half-open probe.
Ticket = Literal["call", "probe"]

State = Literal["closed", "open", "half_open"]


def counts_as_failure(status: int | None) -> bool:
    """Whether an attempt that ended with HTTP ``status`` (None: no answer — a connection error
    or a timeout) is a failure for the breaker."""
    return status is None or status >= 500 or status in (408, 429)


@attrs.frozen
class BreakerSettings:
    """A provider's ``config.circuit_breaker`` (every field optional; the defaults are SPEC
    §5's numbers)."""

    #: Failures within the window that open the breaker (0: only the ratio rule).
    failure_threshold: int = 10
    #: Also open when at least ``min_calls`` calls in the window failed at this share or more
    #: (None: off). For providers with enough traffic that 10 failures are a small share.
    failure_ratio: float | None = None
    #: Calls in the window before ``failure_ratio`` is judged.
    min_calls: int = 20
    window_seconds: float = 30.0
    #: How long an open breaker skips the provider before one probe is let through.
    cooldown_seconds: float = 60.0

    @classmethod
    def parse(cls, raw: Any, where: str) -> tuple[BreakerSettings, list[str]]:
        """Settings from a ``config.circuit_breaker`` table; unknown or invalid fields are
        reported (``where.field: what is wrong``) and keep their defaults."""
        if raw is None:
            return cls(), []
        if not isinstance(raw, Mapping):
            return cls(), [f"{where}: must be a table of settings"]
        problems: list[str] = []
        values: dict[str, Any] = {}
        fields = attrs.fields_dict(cls)
        for name, value in raw.items():
            if name not in fields:
                known = ", ".join(fields)
                problems.append(f"{where}.{name}: unknown setting (known: {known})")
                continue
            problem = _check(name, value)
            if problem:
                problems.append(f"{where}.{name}: {problem}")
            else:
                values[name] = value
        return cls(**values), problems


def _check(name: str, value: Any) -> str | None:
    if name == "failure_ratio":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number between 0 and 1"
        return None if 0 < value <= 1 else "must be > 0 and <= 1"
    if name in ("failure_threshold", "min_calls"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "must be an integer >= 0"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return "must be a number of seconds > 0"
    return None if math.isfinite(value) else "must be finite"


class Breaker:
    """The breaker of one provider credential in one gateway process (see the module doc)."""

    __slots__ = ("_buckets", "_probing", "open_until", "opens", "settings", "source")

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self.settings = settings or BreakerSettings()
        #: [bucket index, calls, failures], oldest first.
        self._buckets: deque[list[int]] = deque()
        #: 0.0 while closed; else when the open state ends (a probe is then due).
        self.open_until = 0.0
        self._probing = False
        #: How many times the breaker opened (closed → open), for the metrics.
        self.opens = 0
        #: The raw ``config.circuit_breaker`` the settings came from (to notice a change).
        self.source: object = None

    def state(self, now: float | None = None) -> State:
        if not self.open_until:
            return "closed"
        now = time.monotonic() if now is None else now
        return "open" if now < self.open_until and not self._probing else "half_open"

    def admit(self, now: float | None = None) -> Ticket | None:
        """May a call go to the provider now? ``"call"`` (closed), ``"probe"`` (the one
        half-open probe, claimed by this caller), or None (skip the provider)."""
        if not self.open_until:
            return "call"
        now = time.monotonic() if now is None else now
        if now < self.open_until or self._probing:
            return None
        self._probing = True
        return "probe"

    def record(self, ticket: Ticket, failed: bool, now: float | None = None) -> None:
        """The outcome of a call admitted with ``ticket``."""
        now = time.monotonic() if now is None else now
        if ticket == "probe":
            self._probing = False
            if failed:
                self.open_until = now + self.settings.cooldown_seconds
            else:
                self.open_until = 0.0
                self._buckets.clear()
            return
        if self.open_until:
            return  # a call from before the breaker opened: the probe decides
        bucket = self._bucket(now)
        bucket[1] += 1
        bucket[2] += failed
        if self._tripped():
            self._buckets.clear()
            self.open_until = now + self.settings.cooldown_seconds
            self.opens += 1

    def release(self, ticket: Ticket) -> None:
        """The call ended without a verdict (the client left, a plugin skipped it): a probe
        frees its place for the next caller; an ordinary call leaves no trace."""
        if ticket == "probe":
            self._probing = False

    def window_counts(self, now: float | None = None) -> tuple[int, int]:
        """(calls, failures) within the window, for tests and diagnostics."""
        now = time.monotonic() if now is None else now
        self._expire(self._index(now))
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    # --- the window ------------------------------------------------------------------------

    def _index(self, now: float) -> int:
        return math.floor(now * _BUCKETS / self.settings.window_seconds)

    def _expire(self, index: int) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] <= index - _BUCKETS:
            buckets.popleft()

    def _bucket(self, now: float) -> list[int]:
        index = self._index(now)
        self._expire(index)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= index:
            return buckets[-1]  # a clock that went back a little counts in the newest bucket
        bucket = [index, 0, 0]
        buckets.append(bucket)
        return bucket

    def _tripped(self) -> bool:
        s = self.settings
        calls = sum(b[1] for b in self._buckets)
        failures = sum(b[2] for b in self._buckets)
        if s.failure_threshold and failures >= s.failure_threshold:
            return True
        ratio = s.failure_ratio
        return ratio is not None and calls >= max(1, s.min_calls) and failures >= ratio * calls
