"""Routing strategies (tollway.routing): the weighted split, the latency and load orders, and
the parsing of upstream ``Retry-After``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.routing import (
    MAX_COOLDOWN_SECONDS,
    LiveStats,
    order,
    retry_after_seconds,
    strategy_problem,
    weight_problem,
    weighted_order,
)

weights_lists = st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=8)


@given(weights_lists, st.integers(min_value=0, max_value=2**32))
def test_weighted_order_is_a_permutation_with_zero_weights_last(
    weights: list[int], seed: int
) -> None:
    walk = weighted_order(weights, random.Random(seed))
    # Fallback covers every entry exactly once.
    assert sorted(walk) == list(range(len(weights)))
    positive = [i for i in walk if weights[i] > 0]
    zero = [i for i in walk if weights[i] == 0]
    # Weight 0 is never drawn before a positive weight: it is a fallback only, in chain order.
    assert walk == positive + zero
    assert zero == sorted(zero)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=9), min_size=2, max_size=5).filter(
        lambda ws: sum(ws) > 0
    ),
    st.integers(min_value=0, max_value=2**32),
)
def test_weighted_first_pick_converges_to_the_weights(weights: list[int], seed: int) -> None:
    rng = random.Random(seed)
    n = 4000
    firsts = [0] * len(weights)
    for _ in range(n):
        firsts[weighted_order(weights, rng)[0]] += 1
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(firsts[i] / n - w / total) < 0.05, (weights, firsts)
        if w == 0:
            assert firsts[i] == 0


def test_weighted_three_to_one() -> None:
    rng = random.Random(7)
    firsts = [0, 0]
    for _ in range(10_000):
        firsts[order("weighted", ["a", "b"], [3, 1], LiveStats(), rng)[0]] += 1
    assert 0.72 < firsts[0] / 10_000 < 0.78


def test_least_latency_puts_the_fastest_first_and_unmeasured_before_it() -> None:
    stats = LiveStats()
    for _ in range(5):
        stats.first_byte("slow", 0.5)
        stats.first_byte("fast", 0.01)
    rng = random.Random(1)
    firsts = [order("least-latency", ["slow", "fast"], [1, 1], stats, rng)[0] for _ in range(500)]
    assert firsts.count(1) >= 450  # the chain's order only while exploring
    assert order("least-latency", ["slow", "new"], [1, 1], stats, random.Random(3))[0] == 1


def test_least_busy_counts_local_and_peer_load() -> None:
    stats = LiveStats()
    stats.started("a")
    stats.started("a")
    stats.merge_peers([{"b": (None, 1, 0.0)}])
    assert order("least-busy", ["a", "b", "c"], [1, 1, 1], stats) == [2, 1, 0]
    stats.ended("a")
    stats.ended("a")
    assert stats.load("a") == 0


def test_cool_down_is_shared_through_snapshots() -> None:
    here, there = LiveStats(), LiveStats()
    here.cool_down("a", 2.0, now=100.0)
    there.merge_peers([here.snapshot(now=100.0)])
    assert there.cooling("a", now=101.0) == 1.0
    assert there.cooling("a", now=103.0) == 0.0
    assert "a" not in here.snapshot(now=103.0)


def test_ordered_and_unknown_keep_the_chain() -> None:
    assert order("ordered", ["a", "b", "c"], [0, 5, 1], LiveStats()) == [0, 1, 2]


def test_retry_after() -> None:
    assert retry_after_seconds([("Retry-After", "2")]) == 2.0
    assert retry_after_seconds([("retry-after-ms", "1500"), ("retry-after", "9")]) == 1.5
    assert retry_after_seconds([("retry-after", "99999")]) == MAX_COOLDOWN_SECONDS
    assert retry_after_seconds([("retry-after", "soon")]) is None
    assert retry_after_seconds([]) is None
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = retry_after_seconds([("retry-after", when)])
    assert parsed is not None and 25 < parsed <= 30


@given(st.text(max_size=30))
def test_retry_after_never_raises(value: str) -> None:
    got = retry_after_seconds([("retry-after", value)])
    assert got is None or 0 <= got <= MAX_COOLDOWN_SECONDS


def test_problems_say_what_to_write() -> None:
    assert strategy_problem("weighted") is None
    problem = strategy_problem("fastest")
    assert problem is not None and "least-latency" in problem
    assert weight_problem(3) is None
    assert weight_problem(-1) is not None and weight_problem(True) is not None
