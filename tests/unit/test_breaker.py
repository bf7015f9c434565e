"""The per-credential circuit breaker: examples with SPEC §5's numbers, and a model-based
hypothesis test of the state machine against a plain reference model."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tollway._breaker import _BUCKETS, Breaker, BreakerSettings, Ticket, counts_as_failure


def test_opens_after_ten_failures_in_thirty_seconds_then_probes() -> None:
    b = Breaker()
    for i in range(9):
        assert b.admit(now=100 + i) == "call"
        b.record("call", True, now=100 + i)
    assert b.admit(now=110) == "call"
    b.record("call", True, now=110)
    assert b.state(now=111) == "open" and b.opens == 1
    assert b.admit(now=111) is None and b.admit(now=169.9) is None
    assert b.admit(now=170.1) == "probe"  # half-open: one probe
    assert b.admit(now=170.2) is None  # ...only one
    assert b.state(now=170.2) == "half_open"
    b.record("probe", True, now=171)  # the probe failed → open again for 60 s
    assert b.admit(now=230) is None and b.admit(now=231.5) == "probe"
    b.record("probe", False, now=232)
    assert b.admit(now=232) == "call" and b.admit(now=232) == "call"
    assert b.state(now=232) == "closed" and b.opens == 1


def test_successes_do_not_reset_the_window() -> None:
    """The issue's case: 30 % failures never made 10 in a row, so the old breaker never
    opened. Within a window, 10 failures open it, whatever succeeded in between."""
    b = Breaker()
    t = 0.0
    for i in range(40):
        t += 0.1
        b.record("call", i % 3 == 0, now=t)
    assert b.state(now=t) == "open"


def test_old_failures_fall_out_of_the_window() -> None:
    b = Breaker()
    for i in range(9):
        b.record("call", True, now=i)
    b.record("call", True, now=40)  # the first nine are older than 30 s
    assert b.admit(now=41) == "call"


def test_failure_ratio_with_minimum_volume() -> None:
    b = Breaker(BreakerSettings(failure_threshold=0, failure_ratio=0.5, min_calls=10))
    for i in range(9):
        b.record("call", True, now=i * 0.01)
    assert b.state(now=1) == "closed"  # 9 calls: below the minimum volume
    b.record("call", False, now=0.1)
    assert b.state(now=1) == "open"  # 9 of 10 failed


def test_late_outcomes_while_open_are_ignored() -> None:
    b = Breaker(BreakerSettings(failure_threshold=1, cooldown_seconds=10))
    b.record("call", True, now=0)
    b.record("call", True, now=5)  # admitted before it opened: does not extend the cool-down
    assert b.admit(now=10.5) == "probe"


def test_a_released_probe_lets_the_next_caller_probe() -> None:
    b = Breaker(BreakerSettings(failure_threshold=1, cooldown_seconds=1))
    b.record("call", True, now=0)
    assert b.admit(now=2) == "probe"
    b.release("probe")
    assert b.admit(now=2) == "probe"


@pytest.mark.parametrize(
    ("status", "failed"),
    [(None, True), (500, True), (503, True), (408, True), (429, True), (400, False), (404, False)],
)
def test_what_counts_as_a_failure(status: int | None, failed: bool) -> None:
    assert counts_as_failure(status) is failed


def test_settings_parse_reports_what_to_fix() -> None:
    s, problems = BreakerSettings.parse(
        {"failure_ratio": 2, "window_seconds": 10, "cooldwn_seconds": 5}, "p.cb"
    )
    assert s.window_seconds == 10 and s.failure_ratio is None
    assert any("p.cb.failure_ratio: must be > 0 and <= 1" in p for p in problems)
    assert any("p.cb.cooldwn_seconds: unknown setting" in p for p in problems)
    assert BreakerSettings.parse(None, "x") == (BreakerSettings(), [])


class BreakerModel(RuleBasedStateMachine):
    """Random admits, outcomes and releases over a moving clock, checked step by step against a
    reference that keeps every recorded outcome and recounts the window from scratch."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = BreakerSettings(
            failure_threshold=4, failure_ratio=0.6, min_calls=5, window_seconds=3.0,
            cooldown_seconds=2.0,
        )  # fmt: skip
        self.b = Breaker(self.settings)
        self.now = 0.0
        # The reference model.
        self.events: list[tuple[float, bool]] = []
        self.open_until = 0.0
        self.probing = False
        self.tickets: list[Ticket] = []

    def _bucket(self, t: float) -> int:
        return math.floor(t * _BUCKETS / self.settings.window_seconds)

    def _window(self) -> list[bool]:
        current = self._bucket(self.now)
        return [f for t, f in self.events if self._bucket(t) > current - _BUCKETS]

    @rule(dt=st.floats(min_value=0, max_value=2.5, allow_nan=False))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def admit(self) -> None:
        got = self.b.admit(now=self.now)
        if not self.open_until:
            expected: Ticket | None = "call"
        elif self.now < self.open_until or self.probing:
            expected = None
        else:
            expected = "probe"
            self.probing = True
        assert got == expected
        if got is not None:
            self.tickets.append(got)

    @precondition(lambda self: self.tickets)
    @rule(failed=st.booleans(), which=st.integers(min_value=0), release=st.booleans())
    def finish(self, failed: bool, which: int, release: bool) -> None:
        ticket = self.tickets.pop(which % len(self.tickets))
        if release:
            self.b.release(ticket)
            if ticket == "probe":
                self.probing = False
            return
        self.b.record(ticket, failed, now=self.now)
        if ticket == "probe":
            self.probing = False
            self.open_until = self.now + 2.0 if failed else 0.0
            self.events = []
            return
        if self.open_until:
            return
        self.events.append((self.now, failed))
        window = self._window()
        failures = sum(window)
        if failures >= 4 or (len(window) >= 5 and failures >= 0.6 * len(window)):
            self.open_until = self.now + 2.0
            self.events = []

    @invariant()
    def same_state(self) -> None:
        if not self.open_until:
            expected = "closed"
            assert self.b.window_counts(now=self.now) == (
                len(self._window()),
                sum(self._window()),
            )
        elif self.now < self.open_until and not self.probing:
            expected = "open"
        else:
            expected = "half_open"
        assert self.b.state(now=self.now) == expected

    @invariant()
    def at_most_one_probe(self) -> None:
        assert self.tickets.count("probe") <= 1


BreakerModel.TestCase.settings = hsettings(max_examples=150, stateful_step_count=60)
TestBreakerModel = BreakerModel.TestCase
