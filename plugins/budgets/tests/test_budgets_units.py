"""Pure functions: windows, prices and cost arithmetic, the estimate, budget parsing, counters.

Property tests (hypothesis) for the window boundaries — UTC, ISO weeks across year boundaries,
month ends — and for the integer cost arithmetic.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway import Principal, Usage
from tollway_budgets import estimate_micros
from tollway_budgets._budgets import (
    BudgetConfigError,
    counters_for,
    parse_budgets,
)
from tollway_budgets._prices import (
    PriceError,
    Prices,
    PriceTable,
    billed_output_tokens,
    cost_micros,
    override_entry,
    parse_override,
    round_half_up,
)
from tollway_budgets._settings import BudgetSettings
from tollway_budgets._windows import (
    DAY_US,
    HOUR_US,
    US,
    format_us,
    parse_us,
    window_bounds,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: 1970 … 2200, in microseconds.
instants = st.integers(min_value=0, max_value=7_258_118_400 * US)


def as_dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def as_us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def reference(window: str, at: datetime) -> tuple[datetime, datetime]:
    """The same windows, the slow obvious way (datetime arithmetic)."""
    if window == "hour":
        start = at.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return day, day + timedelta(days=1)
    if window == "week":
        year, week, _ = at.isocalendar()
        start = datetime.fromisocalendar(year, week, 1).replace(tzinfo=UTC)
        return start, start + timedelta(weeks=1)
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following


# --- windows ------------------------------------------------------------------------------------


@given(instants, st.sampled_from(["hour", "day", "week", "month"]))
def test_windows_match_the_calendar(at_us: int, window: str) -> None:
    start, end = window_bounds(window, at_us)
    assert end is not None
    assert start <= at_us < end
    ref_start, ref_end = reference(window, as_dt(at_us))
    assert (as_dt(start), as_dt(end)) == (ref_start, ref_end)
    # Windows tile time: the last microsecond is in this window, the next one in the next.
    assert window_bounds(window, end - 1) == (start, end)
    assert window_bounds(window, end)[0] == end
    assert window_bounds(window, start) == (start, end)


@given(instants)
def test_week_starts_monday_and_matches_iso_weeks(at_us: int) -> None:
    start, end = window_bounds("week", at_us)
    assert as_dt(start).weekday() == 0 and as_dt(start).time() == datetime.min.time()
    assert end is not None and end - start == 7 * DAY_US
    assert as_dt(start).isocalendar()[:2] == as_dt(at_us).isocalendar()[:2]


@given(instants)
def test_total_never_resets(at_us: int) -> None:
    assert window_bounds("total", at_us) == (0, None)


@pytest.mark.parametrize(
    ("at", "window", "start", "end"),
    [
        # ISO weeks across year boundaries: 2026-01-01 is a Thursday of week 2026-W01, which
        # started on Monday 2025-12-29; 2027-01-01 is a Friday of 2026-W53.
        ("2026-01-01T12:00:00Z", "week", "2025-12-29", "2026-01-05"),
        ("2027-01-01T00:00:00Z", "week", "2026-12-28", "2027-01-04"),
        ("2025-12-28T23:59:59.999999Z", "week", "2025-12-22", "2025-12-29"),
        ("2025-12-29T00:00:00Z", "week", "2025-12-29", "2026-01-05"),
        # Month ends, leap years, December.
        ("2024-02-29T23:59:59.999999Z", "month", "2024-02-01", "2024-03-01"),
        ("2023-02-28T10:00:00Z", "month", "2023-02-01", "2023-03-01"),
        ("2025-12-31T23:59:59.999999Z", "month", "2025-12-01", "2026-01-01"),
        ("2026-01-01T00:00:00Z", "month", "2026-01-01", "2026-02-01"),
        ("2026-03-31T23:00:00Z", "day", "2026-03-31", "2026-04-01"),
        ("2026-03-29T01:30:00Z", "hour", "2026-03-29T01:00:00", "2026-03-29T02:00:00"),
    ],
)
def test_window_examples(at: str, window: str, start: str, end: str) -> None:
    assert window_bounds(window, parse_us(at)) == (parse_us(start), parse_us(end))


@given(instants)
def test_ledger_time_format_round_trips_and_sorts(at_us: int) -> None:
    text = format_us(at_us)
    assert len(text) == 27 and text.endswith("Z")
    assert parse_us(text) == at_us
    later = format_us(at_us + 1)
    assert later > text  # the ledger compares created_at as text


def test_parse_us_accepts_offsets_and_naive_utc() -> None:
    assert parse_us("2026-01-01T01:00:00+01:00") == parse_us("2026-01-01T00:00:00Z")
    assert parse_us("2026-01-01T00:00:00") == parse_us("2026-01-01T00:00:00Z")
    assert parse_us("1970-01-01T01:00:00Z") == HOUR_US


# --- prices and cost arithmetic -----------------------------------------------------------------

token_counts = st.integers(min_value=0, max_value=5_000_000)
usages = st.builds(
    Usage,
    input_tokens=token_counts,
    output_tokens=token_counts,
    cache_read_input_tokens=token_counts,
    cache_creation_input_tokens=token_counts,
    reasoning_tokens=st.integers(min_value=0, max_value=100_000),
)
price_values = st.decimals(min_value=0, max_value=200, places=6).map(Fraction)
price_sets = st.builds(
    Prices,
    input=price_values,
    output=price_values,
    cache_read=price_values,
    cache_write=price_values,
)


def exact(usage: Usage, p: Prices) -> Fraction:
    return (
        usage.input_tokens * p.input
        + billed_output_tokens(usage) * p.output
        + usage.cache_read_input_tokens * p.cache_read
        + usage.cache_creation_input_tokens * p.cache_write
    )


@given(usages, price_sets)
def test_cost_is_the_exact_cost_rounded_once_half_up(usage: Usage, prices: Prices) -> None:
    cost = cost_micros(usage, prices)
    assert isinstance(cost, int) and cost >= 0
    value = exact(usage, prices)
    assert value - Fraction(1, 2) <= cost < value + Fraction(1, 2) or cost == value + Fraction(1, 2)
    assert abs(cost - value) <= Fraction(1, 2)


@given(st.lists(st.tuples(usages, price_sets), max_size=30), st.randoms())
def test_sums_of_costs_are_integers_and_order_independent(
    calls: list[tuple[Usage, Prices]], rnd: random.Random
) -> None:
    costs = [cost_micros(u, p) for u, p in calls]
    shuffled = list(costs)
    rnd.shuffle(shuffled)
    assert sum(costs) == sum(shuffled) and isinstance(sum(costs), int)
    # Rounding once per request: the total is within half a micro-dollar per request of the
    # exact total, whatever the order.
    total_exact = sum((exact(u, p) for u, p in calls), Fraction(0))
    assert abs(sum(costs) - total_exact) <= Fraction(len(calls), 2)


@given(usages, price_sets, st.integers(min_value=0, max_value=1000))
def test_more_tokens_never_cost_less(usage: Usage, prices: Prices, extra: int) -> None:
    # (Within one reporting convention: reasoning inside output, as the adapters report it.)
    usage = Usage(
        usage.input_tokens,
        usage.output_tokens + usage.reasoning_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
        usage.reasoning_tokens,
    )
    more = Usage(
        usage.input_tokens + extra,
        usage.output_tokens + extra,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
        usage.reasoning_tokens,
    )
    assert cost_micros(more, prices) >= cost_micros(usage, prices)


def test_rounding_and_exact_prices() -> None:
    assert [round_half_up(Fraction(n, 10)) for n in (0, 4, 5, 14, 15, 25)] == [0, 0, 1, 1, 2, 3]
    table = PriceTable.packaged()
    gpt4o = table.lookup("gpt-4o", "openai")
    assert gpt4o is not None and gpt4o.source == "table:gpt-4o"
    # 2.5e-06 USD per token is exactly 5/2 micro-USD: no binary-float neighbour.
    assert (gpt4o.input, gpt4o.output, gpt4o.cache_read) == (
        Fraction(5, 2),
        Fraction(10),
        Fraction(5, 4),
    )
    # 1,000,000 tokens of each: 2.50 + 10.00 + 1.25 USD.
    usage = Usage(1_000_000, 1_000_000, 1_000_000, 0)
    assert cost_micros(usage, gpt4o) == 13_750_000
    # 3 input tokens of gpt-4o-mini (0.15 USD / Mtok) are 0.45 micro-USD: rounded once, to 0.
    mini = table.lookup("gpt-4o-mini", "openai")
    assert mini is not None and cost_micros(Usage(3, 0), mini) == 0
    assert cost_micros(Usage(3, 1), mini) == 1  # 0.45 + 0.6 = 1.05


def test_table_lookup_forms() -> None:
    table = PriceTable.packaged()
    dated = table.lookup("claude-sonnet-4-5-20250929", "anthropic")
    assert dated is not None and dated.cache_write == Fraction(15, 4)  # 3.75 USD / Mtok
    # Dated and -latest names fall back to the undated entry; qualified names to the bare one.
    assert table.lookup("gpt-4o-2099-01-01", "openai") == table.lookup("gpt-4o", "openai")
    assert table.lookup("openai/gpt-4o", "openai") is not None
    assert table.lookup("no-such-model-xyz", "openai") is None
    # Long-context tiers: above the threshold, the whole request is priced at the tier.
    tiered = next(
        p
        for name in ("gemini-2.5-pro", "gemini/gemini-2.5-pro")
        if (p := table.lookup(name, "gemini")) is not None and p.tiers
    )
    threshold, tier = tiered.tiers[0]
    assert tier.input > tiered.input
    small = cost_micros(Usage(threshold, 0), tiered)
    large = cost_micros(Usage(threshold + 1, 0), tiered)
    assert small == round_half_up(threshold * tiered.input)
    assert large == round_half_up((threshold + 1) * tier.input)


def test_reasoning_tokens_are_output() -> None:
    # OpenAI and Anthropic count reasoning inside output_tokens: not billed twice …
    assert billed_output_tokens(Usage(output_tokens=100, reasoning_tokens=80)) == 100
    # … a usage reporting more reasoning than output reported them apart: both are billed.
    assert billed_output_tokens(Usage(output_tokens=10, reasoning_tokens=80)) == 90


def test_provider_override() -> None:
    table = PriceTable.packaged()
    prices = parse_override(
        {
            "gpt-4o": {"input_per_mtok": 20, "output_per_mtok": "100"},
            "ft:*": {"output_per_mtok": 1},
        },
        "config.prices",
    )
    assert override_entry(prices, "gpt-4o") == "gpt-4o"
    assert override_entry(prices, "ft:gpt-4o:acme") == "ft:*"
    assert override_entry(prices, "gpt-4o-mini") is None
    base = table.lookup("gpt-4o", "openai")
    over = Prices.per_mtok(prices["gpt-4o"], base)
    # USD per million tokens is micro-USD per token; fields not named come from the table.
    assert (over.input, over.output, over.cache_read) == (20, 100, Fraction(5, 4))
    alone = Prices.per_mtok({"input_per_mtok": 2})
    assert (alone.output, alone.cache_read, alone.cache_write) == (0, 2, 2)
    with pytest.raises(PriceError, match=r"config\.prices\.m\.input_per_mtok"):
        parse_override({"m": {"input_per_mtok": -3}}, "config.prices")
    with pytest.raises(PriceError, match="unknown price field"):
        parse_override({"m": {"input": 3}}, "config.prices")


def test_audio_and_image_units_at_the_tables_prices() -> None:
    table = PriceTable.packaged()
    tts = table.lookup("tts-1", "openai")
    # tts-1: 15 USD per million characters = 15 micro-USD per character.
    assert tts is not None and tts.per_character == 15
    assert cost_micros(Usage(characters=1000), tts) == 15_000
    whisper = table.lookup("whisper-1", "openai")
    # whisper-1: 0.0001 USD per second of audio.
    assert whisper is not None and whisper.per_second == 100
    assert cost_micros(Usage(audio_seconds=2.5), whisper) == 250
    image = table.lookup("gpt-image-1", "openai")
    # Image models price their output as image tokens.
    assert image is not None and image.output == 40
    assert cost_micros(Usage(input_tokens=10, output_tokens=272), image) == 50 + 272 * 40
    imagen = table.lookup("imagen-3.0-generate-001", "gemini")
    assert imagen is not None and cost_micros(Usage(images=2), imagen) == 80_000
    # An override prices units too: per million characters, per second, per image (USD).
    over = Prices.per_mtok({"per_mchars": 30, "per_audio_second": "0.0002", "per_image": 0.04})
    assert (over.per_character, over.per_second, over.per_image) == (30, 200, 40_000)
    # Units and tokens in one request are rounded once, together.
    assert (
        cost_micros(
            Usage(input_tokens=1, characters=1),
            Prices.per_mtok({"input_per_mtok": "0.4", "per_mchars": "0.2"}),
        )
        == 1
    )


@given(usages, st.integers(0, 10_000), st.integers(0, 20), price_values, price_values)
def test_units_add_to_the_token_cost(
    usage: Usage, chars: int, images: int, per_char: Fraction, per_image: Fraction
) -> None:
    prices = Prices(
        Fraction(1),
        Fraction(2),
        Fraction(1),
        Fraction(1),
        per_character=per_char,
        per_image=per_image,
    )
    with_units = Usage(usage.input_tokens, usage.output_tokens, characters=chars, images=images)
    value = exact(with_units, prices) + chars * per_char + images * per_image
    assert cost_micros(with_units, prices) == round_half_up(value)


# --- the estimate -------------------------------------------------------------------------------


def test_estimate_caps_output_and_rounds_once() -> None:
    prices = Prices(Fraction(3), Fraction(15), Fraction(3, 10), Fraction(15, 4))
    settings = BudgetSettings()
    # Claude Code: an 88 KB body with max_tokens 128000 reserves 4096 output tokens, not 128000.
    body = 88_000
    claude_code = estimate_micros(body, 128_000, prices, settings)
    assert claude_code == 22_000 * 3 + 4096 * 15
    assert claude_code < 128_000 * 15 // 10
    # A small max_tokens is honoured; none means the model's max output (unknown here:
    # default_max_output_tokens); embeddings reserve no output.
    assert estimate_micros(401, 16, prices, settings) == 101 * 3 + 16 * 15
    assert estimate_micros(400, None, prices, settings) == 100 * 3 + 4096 * 15
    known = attrs.evolve(prices, max_output_tokens=1500)
    assert estimate_micros(400, None, known, settings) == 100 * 3 + 1500 * 15
    assert estimate_micros(400, None, known, settings, default_max_output=700) == 300 + 700 * 15
    assert estimate_micros(400, 3000, known, settings) == 300 + 3000 * 15  # max_tokens wins
    legacy = BudgetSettings(output_estimate_default_tokens=1024)
    assert estimate_micros(400, None, prices, legacy) == 100 * 3 + 1024 * 15
    assert estimate_micros(400, 16, prices, settings, embeddings=True) == 300
    assert estimate_micros(400, 9000, prices, settings, recent_output=10.0) == 300 + 15 * 15
    assert estimate_micros(400, 16, None, settings) == 0


# --- budgets and counters -----------------------------------------------------------------------

KEY = Principal(
    key_id="vk_1",
    display_prefix="lw_vk_test_01ABCDE",
    organization_id="org_1",
    team_id="team_1",
    project_id="proj_1",
    principal_id="alice",
)


def test_parse_budgets_both_shapes() -> None:
    bundle = {
        "id": "bud_1",
        "scope_type": "project",
        "scope_id": "proj_1",
        "window": "month",
        "limit_micro_usd": 10_000,
        "on_breach": "block",
        "reset_at": "2026-03-05T10:00:00.000000Z",
        "name": "eng",
    }
    static = {"scope": "team", "window": "day", "limit_usd": "0.25", "on_breach": "warn"}
    a, b = parse_budgets([bundle, static], KEY)
    assert (a.id, a.label, a.limit, a.block, a.name) == (
        "bud_1",
        "project:month",
        10_000,
        True,
        "eng",
    )
    assert a.reset_us == parse_us("2026-03-05T10:00:00Z")
    assert (b.id, b.scope_id, b.limit, b.block) == ("team:team_1:day", "team_1", 250_000, False)
    for bad, match in (
        ([{"scope": "galaxy", "limit_usd": 1}], "scope"),
        ([{"scope": "project", "limit_usd": 1, "window": "year"}], "window"),
        ([{"scope": "project"}], "limit_usd"),
        ([{"scope": "project", "limit_usd": "0.0000001"}], "limit_usd"),
        ([{"scope": "end_user", "limit_usd": 1}], "needs an id"),
        ([{"scope": "project", "limit_usd": 1, "on_breach": "shout"}], "on_breach"),
        ("nope", "list"),
    ):
        with pytest.raises(BudgetConfigError, match=match):
            parse_budgets(bad, KEY)


def test_counters_apply_by_scope_end_user_and_reset() -> None:
    budgets = parse_budgets(
        [
            {"id": "p", "scope": "project", "limit_usd": 1},
            {"id": "other", "scope": "project:proj_2", "limit_usd": 1},
            {"id": "alice", "scope": "principal:alice", "limit_usd": 1, "window": "day"},
            {"id": "u1", "scope": "end_user:u1", "limit_usd": 1},
            {"id": "each", "scope": "end_user:*", "limit_usd": 1, "window": "hour"},
            {
                "id": "r",
                "scope": "organization",
                "limit_usd": 1,
                "reset_at": "2026-03-10T00:00:00Z",
            },
        ],
        KEY,
    )
    at = parse_us("2026-03-15T12:34:56Z")
    plain = counters_for(budgets, KEY, None, at, "pfx", 0)
    assert [c.budget.id for c in plain] == ["p", "alice", "r"]
    p, alice, r = plain
    assert p.hash_key == f"pfx:{{org:org_1}}:b:p:{parse_us('2026-03-01T00:00:00Z')}:c"
    assert p.zset_key.endswith(":z") and p.until_us == parse_us("2026-04-01T00:00:00Z")
    assert alice.since_us == parse_us("2026-03-15T00:00:00Z")
    assert r.since_us == parse_us("2026-03-10T00:00:00Z")  # reset inside the window
    assert r.spend_query() == {
        "organization_id": "org_1",
        "scope_type": "organization",
        "scope_id": "org_1",
        "since": "2026-03-10T00:00:00.000000Z",
        "until": "2026-04-01T00:00:00.000000Z",
    }
    u1 = counters_for(budgets, KEY, "u1", at, "pfx", 0)
    assert [c.budget.id for c in u1] == ["p", "alice", "u1", "each", "r"]
    each_u1 = u1[3]
    each_u2 = counters_for(budgets, KEY, "u 2/x", at, "pfx", 0)[2]
    # Per-end-user budgets: one counter per end user (odd ids are hashed into the key).
    assert each_u1.ident != each_u2.ident and each_u2.scope_value == "u 2/x"
    assert ":eu:u1" in each_u1.ident and " " not in each_u2.hash_key
    entry = {"organization_id": "org_1", "end_user_id": "u1", "project_id": "proj_1"}
    assert each_u1.matches(entry, at) and not each_u2.matches(entry, at)
    assert not each_u1.matches(entry, parse_us("2026-03-15T11:59:59Z"))  # the previous hour
    assert not p.matches({**entry, "organization_id": "org_2"}, at)


def test_stream_end_is_a_line_not_words_in_the_json() -> None:
    from tollway_budgets._settle import TERMINAL as _TERMINAL
    from tollway_budgets._settle import ends_stream as _ends_stream

    quoted = bytearray(
        b'event: content_block_delta\ndata: {"delta":{"text":"send event: message_stop '
        b'and data: [DONE]"}}\n\n'
    )
    assert not _ends_stream(quoted, _TERMINAL["messages"])
    assert not _ends_stream(bytearray(b'data: {"c":"data: [DONE]"}\n\n'), _TERMINAL["chat"])
    end = bytearray(b"event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {}\n\n")
    assert _ends_stream(end, _TERMINAL["messages"])
    assert _ends_stream(bytearray(b"data: [DONE]\n\n"), _TERMINAL["chat"])
    completed = bytearray(b"event: response.completed\ndata: {}\n\n")
    assert _ends_stream(completed, _TERMINAL["responses"])


def test_provider_override_prices_are_built_once_per_config() -> None:
    from tollway.config import ProviderConfig
    from tollway_budgets._state import State

    state = State(
        settings=BudgetSettings(),
        table=PriceTable.packaged(),
        store=None,  # type: ignore[arg-type]  # prices() touches neither store nor client
        client=None,
        outbox=None,
        node_id="n",
        unknown_prices=None,
        policy=None,  # type: ignore[arg-type]
    )
    first = ProviderConfig(
        name="p", type="openai", config={"prices": {"bench-*": {"input_per_mtok": 2}}}
    )
    found = state.prices("bench-1", first, "openai")
    assert found is not None and found.input == 2 and found.source == "provider:p:bench-*"
    # The same config again: the very same object, not rebuilt per request.
    assert state.prices("bench-1", first, "openai") is found
    # A model the override does not name: the table's prices (none for this one).
    assert state.prices("other-model-xyz", first, "openai") is None
    # A changed config (the store's new revision brings a new dict): its new prices.
    second = attrs.evolve(first, config={"prices": {"bench-*": {"input_per_mtok": 5}}})
    changed = state.prices("bench-1", second, "openai")
    assert changed is not None and changed.input == 5
    # Without config.prices: the table's.
    plain = ProviderConfig(name="q", type="openai")
    assert state.prices("gpt-4o", plain, "openai") == PriceTable.packaged().lookup(
        "gpt-4o", "openai"
    )


def test_a_keys_plan_keeps_its_counters_until_a_window_ends_and_goes_with_its_key() -> None:
    """Admission's per-key work (``_plan``): the counters are reused while no window ends and
    no ``reset_at`` passes — the same counters ``counters_for`` gives at each instant — and the
    plan is dropped with its principal (a refreshed bundle is a new principal)."""
    import gc

    from tollway_budgets._plan import plan_of
    from tollway_budgets._state import State
    from tollway_budgets._store import LocalStore

    state = State(
        settings=BudgetSettings(),
        table=PriceTable.packaged(),
        store=LocalStore(),
        client=None,
        outbox=None,
        node_id="n",
        unknown_prices=None,
        policy=None,  # type: ignore[arg-type]  # plans touch no Redis
    )

    def exercise() -> None:
        raw = [
            {"id": "d", "scope": "project", "window": "day", "limit_usd": 1},
            {
                "id": "r",
                "scope": "organization",
                "limit_usd": 1,
                "reset_at": "2026-03-15T18:00:00Z",
            },
            {"id": "t", "scope": "virtual_key", "window": "total", "limit_usd": 1},
        ]
        key = attrs.evolve(KEY, extras={"budgets": raw})
        plan = plan_of(state, key, raw)
        assert plan_of(state, key, raw) is plan

        def at(text: str) -> list[Any]:
            return plan.counters_at(key, None, parse_us(text), "pfx", 0)

        noon = at("2026-03-15T12:00:00Z")
        assert at("2026-03-15T12:00:30Z") is noon  # reused
        # Whenever the plan answers, it answers what counters_for does then.
        budgets = state.budgets_of(key, raw)
        for when in (
            "2026-03-15T12:00:59Z",
            "2026-03-15T12:01:01Z",  # the total budget's expiry slides: rebuilt within a minute
            "2026-03-15T17:59:59.999999Z",
            "2026-03-15T18:00:00Z",  # reset_at passed: the organization counter starts anew
            "2026-03-16T00:00:00Z",  # a new day
        ):
            got = at(when)
            fresh = counters_for(budgets, key, None, parse_us(when), "pfx", 0)
            assert [attrs.evolve(c, expire_at_ms=0) for c in got] == [
                attrs.evolve(c, expire_at_ms=0) for c in fresh
            ], when
            # A total budget's sliding 35-day expiry may be up to the minute of reuse older.
            for old, new in zip(got, fresh, strict=True):
                assert 0 <= new.expire_at_ms - old.expire_at_ms <= 60_000, when
        assert at("2026-03-15T18:00:00Z")[1].since_us == parse_us("2026-03-15T18:00:00Z")
        assert at("2026-03-16T00:00:00Z")[0].since_us == parse_us("2026-03-16T00:00:00Z")
        # The reservation's description: the key's fixed fields and the request's own.
        meta = orjson.loads(plan.meta("2026-03-15T12:00:00.000001Z", "u1", "gpt-4o"))
        assert meta == {
            "created_at": "2026-03-15T12:00:00.000001Z",
            "end_user_id": "u1",
            "model": "gpt-4o",
            "organization_id": "org_1",
            "team_id": key.team_id,
            "project_id": "proj_1",
            "vk_id": key.key_id,
            "principal_id": key.principal_id,
            "gateway_node_id": "n",
        }

    exercise()
    gc.collect()
    assert state.plans == {}  # the principal is gone: so is its plan
