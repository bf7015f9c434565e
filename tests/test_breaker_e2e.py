"""The circuit breaker with real upstreams: a flaky primary (30 % 5xx, 10 % timeouts) behind a
healthy fallback; every non-stream call succeeds, and the primary's breaker visibly opens
(metric and the attempt's span attribute source, ``Attempt.breaker_state``)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import Simulator, start_simulator, stop
from prometheus_client.parser import text_string_to_metric_families

HELLO = [{"role": "user", "content": "hi"}]
#: Calls of the flaky-primary drill: a bounded slice by default; the long drill (thousands of
#: calls, over several cool-downs) on demand, see docs/testing-plugins.md.
DRILL_CALLS = int(os.environ.get("TOLLWAY_BREAKER_DRILL_CALLS", "40"))


def chain(primary: str, secondary: str, breaker: str) -> str:
    return f"""
[[providers]]
name = "flaky"
type = "openai"
base_url = "{primary}/v1"
api_key = "sk-flaky"
priority = 0
config = {{ circuit_breaker = {breaker} }}

[[providers]]
name = "healthy"
type = "openai"
base_url = "{secondary}/v1"
api_key = "sk-healthy"
priority = 1
"""


def breaker_states(gw) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{gw.url}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "gateway_circuit_breaker_state":
                out[(s.labels["provider"], s.labels["state"])] = s.value
            if s.name == "gateway_circuit_breaker_opens_total":
                out[(s.labels["provider"], "opens")] = s.value
    return out


def test_flaky_primary_opens_its_breaker_and_every_call_succeeds(
    sim: Simulator, gateway_factory
) -> None:
    flaky = start_simulator("--fault-mix", "500=0.3,timeout=0.1")
    long_drill = DRILL_CALLS > 40
    # The long drill cools down every 2 s, so half-open probes meet the flaky primary again.
    cooldown = 2 if long_drill else 600
    try:
        gw = gateway_factory(
            chain(
                flaky.url, sim.url, f"{{ failure_threshold = 5, cooldown_seconds = {cooldown} }}"
            ),
            {"SERVER_UPSTREAM_TIMEOUT_SECONDS": "1"},
        )

        def call(_: int) -> httpx.Response:
            return httpx.post(
                f"{gw.url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": HELLO},
                headers={"authorization": f"Bearer {gw.key}"},
                timeout=30,
            )

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(call, range(DRILL_CALLS)))
        statuses = [r.status_code for r in replies]
        opens = breaker_states(gw).get(("flaky", "opens"), 0)
        print(
            f"\nDRILL fallback_30pct_5xx_10pct_timeouts: {statuses.count(200)}/{len(replies)} "
            f"non-stream calls succeeded ({statuses.count(200) / len(replies):.2%}), breaker "
            f"opened {opens:g} time(s)"
        )
        assert statuses.count(200) >= 0.999 * len(replies), statuses
        if long_drill:
            states = breaker_states(gw)
            assert states[("flaky", "opens")] >= 2, states  # re-opened after failed probes
            return
        # The breaker opened (5 failures), so later calls skipped the primary: fallback count 0
        # and answered by the healthy provider without trying the flaky one.
        assert replies[-1].headers["x-langwatch-provider-name"] == "healthy"
        assert replies[-1].headers["x-langwatch-fallback-count"] == "0"
        states = breaker_states(gw)
        assert states[("flaky", "open")] == 1 and states[("flaky", "closed")] == 0
        assert states[("flaky", "opens")] == 1
        assert states[("healthy", "closed")] == 1
        # The flaky provider saw far fewer than the 40 calls: the open breaker kept them away.
        assert len(flaky.requests()) < 30
    finally:
        stop(flaky.proc)


def test_a_400_does_not_count_and_a_5xx_does(sim: Simulator, gateway_factory) -> None:
    gw = gateway_factory(
        chain(sim.url, sim.url, "{ failure_threshold = 2, cooldown_seconds = 600 }")
    )

    def call(fault: str) -> httpx.Response:
        return httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO},
            headers={"authorization": f"Bearer {gw.key}", "x-simulator-fault": fault},
            timeout=30,
        )

    for _ in range(3):
        assert call("400").status_code == 400  # the request's fault: the breaker stays closed
    assert breaker_states(gw)[("flaky", "closed")] == 1
    for _ in range(2):
        assert call("503").status_code == 502  # both providers fail: 2 failures for "flaky"
    states = breaker_states(gw)
    assert states[("flaky", "open")] == 1
    r = call("503")
    # flaky skipped; healthy (threshold 10) still tried: its 503 is passed through as it is.
    assert r.status_code == 503
    assert r.headers["x-langwatch-provider-name"] == "healthy"
