"""``gateway_event_loop_lag_seconds``: how late the gateway's event loop ran its timer.

A real gateway with every plugin, and one more that blocks the event loop for 0.6 s when a
request asks it to (as a synchronous call in a plugin would): ``/metrics`` shows the timer
firing ten times a second, never 0.25 s late while nothing blocks, and the stall as one late
firing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Gateway, Simulator, provider_config, start_gateway, stop
from prometheus_client.parser import text_string_to_metric_families

from tollway.testing_plugins import plugin_site

# Timing-sensitive (it measures the event loop's lag): `./run test` runs it after the parallel
# run, alone on the machine.
pytestmark = pytest.mark.serial

STALLING = """
import time
from tollway import hookimpl


@hookimpl
def admit(ctx):
    if ctx.headers.get("x-test-stall"):
        time.sleep(0.6)  # blocks the event loop, as a synchronous call would
"""


@pytest.fixture(scope="module")
def stalling_gateway(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("stalling")
    env = plugin_site(tmp / "site", "tollway-test-stalling", STALLING)
    gw = start_gateway(tmp / "gw", provider_config(sim.url), env)
    yield gw
    stop(gw.proc)


def _lag(gw: Gateway) -> tuple[float, float]:
    """The histogram's count, and how many firings were later than 0.25 s."""
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    buckets: dict[str, float] = {}
    count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "gateway_event_loop_lag_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets[sample.labels["le"]] = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return count, count - buckets["0.25"]


def _chat(gw: Gateway, headers: dict[str, str]) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return gw.post(None, "/v1/chat/completions", body, headers)


def test_the_timer_fires_ten_times_a_second_and_on_time_when_nothing_blocks(
    stalling_gateway: Gateway,
) -> None:
    before, late_before = _lag(stalling_gateway)
    assert _chat(stalling_gateway, {}).status_code == 200
    time.sleep(1.0)
    after, late_after = _lag(stalling_gateway)
    assert 5 <= after - before <= 15
    assert late_after == late_before


def test_a_blocked_event_loop_shows_as_a_late_firing(stalling_gateway: Gateway) -> None:
    _, late_before = _lag(stalling_gateway)
    assert _chat(stalling_gateway, {"x-test-stall": "1"}).status_code == 200
    time.sleep(0.3)
    _, late_after = _lag(stalling_gateway)
    assert late_after == late_before + 1  # one timer was pending: it fired 0.5-0.6 s late
