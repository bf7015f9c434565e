"""Per-credential circuit breaker (SPEC §5): 10 failures in 30 s → open 60 s → half-open probe."""

from __future__ import annotations

import time
from collections import deque

__all__ = ["Breaker"]


class Breaker:
    """Counts health failures (connect errors, timeouts, 5xx) of one provider credential.

    closed → (``threshold`` failures within ``window`` s) → open for ``cooldown`` s → half-open:
    one probe request is let through; its success closes the breaker, its failure re-opens it.
    """

    __slots__ = ("_failures", "_probing", "cooldown", "open_until", "threshold", "window")

    def __init__(self, threshold: int = 10, window: float = 30.0, cooldown: float = 60.0) -> None:
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self._failures: deque[float] = deque()
        self.open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        if not self.open_until:
            return "closed"
        return "open" if time.monotonic() < self.open_until else "half_open"

    def allow(self, now: float | None = None) -> bool:
        """Whether a request may be sent now (claims the half-open probe when it is due)."""
        if not self.open_until:
            return True
        now = time.monotonic() if now is None else now
        if now < self.open_until or self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures.clear()
        self.open_until = 0.0
        self._probing = False

    def failure(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._probing or self.open_until:
            self._probing = False
            self.open_until = now + self.cooldown
            return
        failures = self._failures
        failures.append(now)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) >= self.threshold:
            failures.clear()
            self.open_until = now + self.cooldown

    def release(self) -> None:
        """The probe ended without a verdict (e.g. the client left): allow another probe."""
        self._probing = False
