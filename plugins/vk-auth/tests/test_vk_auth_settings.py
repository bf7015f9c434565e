"""Durations, environment variables and the embedded base URL."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway_vk_auth import SettingsError, VKAuthSettings, format_duration, parse_duration
from tollway_vk_auth._settings import embedded_base_url


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("250ms", 0.25),
        ("1500us", 0.0015),
        ("1500µs", 0.0015),
        ("10ns", 1e-8),
        ("-5s", -5.0),
        ("+5s", 5.0),
        ("2h0m0s", 7200.0),
        ("1m1m", 120.0),
    ],
)
def test_parse_duration_accepts_go_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "5", "00", "s", "5 m", " 5m", "5m ", "5d", "1h30", "h1", "5M", "1e3s", "--5s", "."]
)
def test_parse_duration_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@settings(deadline=None)  # no timing assertions: the machine may be loaded
@given(st.integers(min_value=-(10**7), max_value=10**7))
def test_format_then_parse_round_trips_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@settings(deadline=None)  # no timing assertions: the machine may be loaded
@given(
    st.lists(
        st.tuples(st.integers(0, 10**4), st.sampled_from(["h", "m", "s", "ms"])),
        min_size=1,
        max_size=5,
    )
)
def test_parse_duration_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == pytest.approx(sum(n * scale[u] for n, u in parts))


@settings(deadline=None)  # no timing assertions: the machine may be loaded
@given(st.text(alphabet="0123456789.hms +-", max_size=8))
def test_parse_duration_never_raises_anything_but_valueerror(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError:
        return
    assert isinstance(value, float)


def test_defaults() -> None:
    s = VKAuthSettings.from_env({})
    assert s.base_url is None
    assert (s.soft_ttl, s.soft_bump, s.hard_grace) == (60.0, 300.0, 21600.0)
    assert s.stale_serving
    assert s.l1_size == 10_000
    assert s.l2_ttl == 21600


def test_go_durations_and_seconds_names() -> None:
    s = VKAuthSettings.from_env(
        {
            "LW_GATEWAY_AUTH_CACHE_SOFT_BUMP": "30s",
            "LW_GATEWAY_AUTH_CACHE_HARD_GRACE_SECONDS": "3600",
            "LW_GATEWAY_AUTH_CACHE_SOFT_TTL": "2s",
            "LW_GATEWAY_BASE_URL": "http://cp:5560/",
        }
    )
    assert (s.soft_bump, s.hard_grace, s.soft_ttl) == (30.0, 3600.0, 2.0)
    assert s.base_url == "http://cp:5560"


@pytest.mark.parametrize(
    "env",
    [
        {"LW_GATEWAY_AUTH_CACHE_HARD_GRACE": "0s"},
        {"LW_GATEWAY_AUTH_CACHE_HARD_GRACE_SECONDS": "-1"},
        {"LW_GATEWAY_AUTH_CACHE_SOFT_BUMP_SECONDS": "-1"},
    ],
)
def test_stale_serving_can_be_disabled(env: dict[str, str]) -> None:
    s = VKAuthSettings.from_env(env)
    assert not s.stale_serving
    assert s.l2_ttl == 60


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LW_GATEWAY_AUTH_CACHE_SOFT_BUMP": "5 minutes"}, "LW_GATEWAY_AUTH_CACHE_SOFT_BUMP="),
        ({"LW_GATEWAY_AUTH_CACHE_HARD_GRACE": "6"}, "LW_GATEWAY_AUTH_CACHE_HARD_GRACE="),
        (
            {"LW_GATEWAY_AUTH_CACHE_HARD_GRACE_SECONDS": "6h"},
            "LW_GATEWAY_AUTH_CACHE_HARD_GRACE_SECONDS=",
        ),
        (
            {
                "LW_GATEWAY_AUTH_CACHE_SOFT_BUMP": "5m",
                "LW_GATEWAY_AUTH_CACHE_SOFT_BUMP_SECONDS": "60",
            },
            "disagree",
        ),
        ({"LW_GATEWAY_AUTH_CACHE_SOFT_TTL": "0s"}, "LW_GATEWAY_AUTH_CACHE_SOFT_TTL"),
        ({"LW_GATEWAY_AUTH_CACHE_SIZE": "lots"}, "LW_GATEWAY_AUTH_CACHE_SIZE"),
        ({"LW_GATEWAY_BASE_URL": "cp:5560"}, "LW_GATEWAY_BASE_URL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        VKAuthSettings.from_env(env)


def test_same_value_under_both_names_is_fine() -> None:
    s = VKAuthSettings.from_env(
        {"LW_GATEWAY_AUTH_CACHE_SOFT_BUMP": "5m", "LW_GATEWAY_AUTH_CACHE_SOFT_BUMP_SECONDS": "300"}
    )
    assert s.soft_bump == 300.0


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        (":5563", "http://127.0.0.1:5563"),
        ("0.0.0.0:5563", "http://127.0.0.1:5563"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("[::]:5563", "http://[::1]:5563"),
        ("gw.internal:5563", "http://gw.internal:5563"),
    ],
)
def test_embedded_base_url(addr: str, url: str) -> None:
    assert embedded_base_url(addr) == url
