"""The documented overspend bound (docs/plugins/budgets.md#the-reservation-estimate-and-the-
overspend-bound), checked with hypothesis against the real admission arithmetic (the in-process
store, whose semantics the Redis scripts share) and the real estimate.

Requests are admitted and settled in random interleavings — many in flight at once, as with
several replicas racing at a limit. Each one's actual answer is anything the provider could
send: up to its ``max_tokens``, or without one up to the model's max output."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway import Principal, Usage
from tollway_budgets import estimate_micros
from tollway_budgets._budgets import counters_for, parse_budgets
from tollway_budgets._prices import Prices, cost_micros
from tollway_budgets._settings import BudgetSettings
from tollway_budgets._store import LocalStore

MODEL_MAX = 2000
PRICES = Prices(Fraction(3), Fraction(15), Fraction(3), Fraction(3), max_output_tokens=MODEL_MAX)
PRINCIPAL = Principal(
    key_id="vk_1", display_prefix="lw_vk_test_01ABCDE", project_id="p1", organization_id="o1"
)

request = st.tuples(
    st.integers(min_value=4, max_value=4000),  # body bytes
    st.one_of(st.none(), st.integers(min_value=1, max_value=128_000)),  # max_tokens
    st.floats(min_value=0, max_value=1),  # how much of the allowed output the answer used
    st.floats(min_value=0, max_value=1),  # and of the input estimate
)


def run(
    plan: list[tuple[int, int | None, float, float]],
    order: list[int],
    budget_settings: BudgetSettings,
    limit: int,
) -> tuple[int, int, int]:
    """Admit and settle ``plan`` in ``order`` (each index twice: admit, then settle); the
    final spend, the largest estimate admitted and the sum of the excesses (actual minus
    estimate)."""
    (budget,) = parse_budgets(
        [{"scope": "project", "window": "total", "limit_micro_usd": limit}], PRINCIPAL
    )
    (counter,) = counters_for([budget], PRINCIPAL, None, 0, "t", 0)
    store = LocalStore()
    store.seed([counter], [0], 0, reseed=False)
    admitted: dict[int, tuple[int, int]] = {}
    seen: set[int] = set()
    largest = excess = 0
    for i in order:
        body, max_tokens, used_out, used_in = plan[i]
        estimate = estimate_micros(body, max_tokens, PRICES, budget_settings)
        if i not in seen:
            seen.add(i)
            a = store.admit([counter], [estimate], f"r{i}", 0, 10**9, 10**9)
            if a.status == "ok":
                allowed = MODEL_MAX if max_tokens is None else min(max_tokens, MODEL_MAX)
                usage = Usage(
                    input_tokens=int(-(-body // 4) * used_in),
                    output_tokens=int(allowed * used_out),
                )
                admitted[i] = (estimate, cost_micros(usage, PRICES))
        elif i in admitted:
            estimate, actual = admitted.pop(i)
            store.settle([counter.ident], f"r{i}", [actual])
            largest = max(largest, estimate)
            excess += max(0, actual - estimate)
    return store.counters[counter.ident].spent, largest, excess


plans = st.lists(request, min_size=1, max_size=25).flatmap(
    lambda plan: st.tuples(
        st.just(plan), st.permutations([i for i in range(len(plan)) for _ in (0, 1)])
    )
)


@settings(max_examples=200)
@given(plans, st.integers(min_value=1, max_value=200_000))
def test_estimates_cover_the_worst_case_so_overspend_is_below_one_estimate(
    plan_order: tuple[list[tuple[int, int | None, float, float]], list[int]], limit: int
) -> None:
    """Defaults: without ``max_tokens`` the estimate reserves the model's max output (it is
    below ``default_max_output_tokens`` and the cap), so no answer outruns its estimate and
    the spend stays below limit + one estimate."""
    plan, order = plan_order
    spent, largest, excess = run(plan, order, BudgetSettings(), limit)
    assert excess == 0
    assert spent < limit + largest or spent <= limit


@settings(max_examples=200)
@given(plans, st.integers(min_value=1, max_value=200_000))
def test_a_lower_default_adds_only_the_excess_of_longer_answers(
    plan_order: tuple[list[tuple[int, int | None, float, float]], list[int]], limit: int
) -> None:
    """``default_max_output_tokens`` below the model's max output: the bound gains the excess
    of answers longer than their estimate, and nothing else."""
    plan, order = plan_order
    spent, largest, excess = run(plan, order, BudgetSettings(default_max_output_tokens=300), limit)
    assert spent < limit + largest + excess or spent <= limit
