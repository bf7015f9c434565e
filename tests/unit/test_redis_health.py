"""The single-flight Redis probe (tollway.redis.RedisHealth / FailurePolicy)."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from tollway.redis import FailurePolicy, RedisFacility, RedisHealth, RedisOptions


def test_after_the_back_off_exactly_one_caller_probes() -> None:
    h = RedisHealth(probe_timeout=5)
    assert h.available(now=0) and h.available(now=0)  # healthy: everyone
    h.failed(1.0, now=0)
    assert not h.available(now=0.5)
    assert h.available(now=1.0)  # the probe
    assert not any(h.available(now=1.0 + i / 10) for i in range(20))  # the others, at once
    h.failed(1.0, now=3.0)  # the probe failed: back off again
    assert not h.available(now=3.5) and h.available(now=4.0)
    h.ok()
    assert h.available(now=4.1) and h.available(now=4.1)


def test_a_probe_that_never_reports_frees_its_place() -> None:
    h = RedisHealth(probe_timeout=2)
    h.failed(1.0, now=0)
    assert h.available(now=1)
    assert not h.available(now=2.9)
    assert h.available(now=3.1) and h.probes == 2


@given(st.lists(st.tuples(st.floats(0, 0.5), st.sampled_from(["ask", "fail", "ok"])), max_size=80))
def test_never_two_probes_out_at_once(steps: list[tuple[float, str]]) -> None:
    h = RedisHealth(probe_timeout=100)
    h.failed(1.0, now=0)
    now, out = 0.0, 0
    for dt, what in steps:
        now += dt
        if what == "ask":
            if h.available(now=now) and h.down_until:
                out += 1
        elif what == "fail":
            h.failed(1.0, now=now)
            out = 0
        else:
            h.ok()
            out = 0
        assert out <= 1


def test_plugins_sharing_the_facility_share_one_outage() -> None:
    facility = RedisFacility(RedisOptions("redis://127.0.0.1:1"))
    log = logging.getLogger("test")
    a = FailurePolicy(log, "a %(error)s")
    b = FailurePolicy(log, "b %(error)s", retry_interval=0.0)
    a.share(facility)
    b.share(facility)
    a.failed(OSError("frozen"), "admission")
    assert not b.available()  # a's failure backs b off too
    assert facility.health.down_until > 0
    a.ok()
    assert b.available()
