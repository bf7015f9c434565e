"""The per-credential circuit breaker (SPEC §5 numbers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tollway._breaker import Breaker


def test_opens_after_ten_failures_in_thirty_seconds_then_probes() -> None:
    b = Breaker()
    for i in range(9):
        b.failure(now=100 + i)
    assert b.allow(now=110)
    b.failure(now=110)
    assert not b.allow(now=111) and not b.allow(now=169.9)
    assert b.allow(now=170.1)  # half-open: one probe
    assert not b.allow(now=170.2)  # ...only one
    b.failure(now=171)  # the probe failed → open again for 60 s
    assert not b.allow(now=230) and b.allow(now=231.5)
    b.success()
    assert b.allow(now=232) and b.allow(now=232) and b.state == "closed"


def test_old_failures_fall_out_of_the_window() -> None:
    b = Breaker()
    for i in range(9):
        b.failure(now=i)
    b.failure(now=40)  # the first nine are older than 30 s
    assert b.allow(now=41)


@given(st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=60))
def test_never_opens_with_fewer_than_threshold_failures_per_window(times: list[float]) -> None:
    b = Breaker()
    opened = False
    for t in sorted(times):
        b.failure(now=t)
        recent = [x for x in times if t - 30 < x <= t]
        if b.open_until and not opened:
            opened = True
            assert len(recent) >= 10
