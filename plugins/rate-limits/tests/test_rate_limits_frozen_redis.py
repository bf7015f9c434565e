"""A frozen Redis (accepting connections, answering nothing: a private ``redis-server`` stopped
with SIGSTOP): after the first failure only one request at a time probes Redis and waits for
its timeout; every other request fails open at once (docs/reliability.md#redis-outages).

Which requests waited is counted, not timed: every call that reached the frozen Redis waited
for its timeout and then counted one ``gateway_rate_limit_redis_errors_total``; a request that
took the fail-open path at once counted none."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rate_limits_support import Gateway, Key, RedisServer, openai_provider, start_gateway

from tollway.testing import Simulator, start_simulator, stop

# Timing-sensitive (real processes racing, drills): `./run test` runs it after the parallel run,
# alone on the machine.
pytestmark = pytest.mark.serial

RETRY_INTERVAL = 1.0
WORKERS = 6


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


def redis_errors(gw: Gateway) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_rate_limit_redis_errors_total":
                return sample.value
    return 0.0


def test_frozen_redis_only_the_probe_waits(sim: Simulator, tmp_path: Path) -> None:
    key = Key({"rate_limits": {"rpm": 100_000}})
    with RedisServer(tmp_path / "redis") as server:
        gw = start_gateway(
            tmp_path / "gw",
            providers=[openai_provider(sim.url)],
            keys=[key],
            redis_url=server.url,
            settings={"redis_retry_interval_seconds": RETRY_INTERVAL},
        )
        try:
            assert server.proc is not None
            with httpx.Client(timeout=30) as warm:
                for _ in range(3):
                    assert gw.chat(key, client=warm).status_code == 200
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                # The request that finds the outage waits for Redis (the first probe).
                first = gw.chat(key)
                assert first.status_code == 200
                assert "x-ratelimit-limit-requests" not in first.headers  # failed open
                before = redis_errors(gw)
                assert before >= 1
                served = 0
                started = time.monotonic()

                def worker() -> int:
                    n = 0
                    with httpx.Client(timeout=30) as client:
                        while time.monotonic() - started < 4 * RETRY_INTERVAL:
                            r = gw.chat(key, client=client)
                            assert r.status_code == 200, r.text
                            n += 1
                    return n

                with ThreadPoolExecutor(WORKERS) as pool:
                    served = sum(f.result() for f in [pool.submit(worker) for _ in range(WORKERS)])
                elapsed = time.monotonic() - started
                waited = redis_errors(gw) - before
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            # At most one probe per back-off interval; before the single-flight probe, every
            # worker asked the frozen Redis after each interval (about WORKERS per interval).
            probes_possible = 1 + int(elapsed / RETRY_INTERVAL)
            assert waited <= probes_possible, (waited, served, elapsed)
            assert served >= 3 * waited, (waited, served)
            # Redis back: the limits apply again.
            deadline = time.monotonic() + 10
            while "x-ratelimit-limit-requests" not in gw.chat(key).headers:
                assert time.monotonic() < deadline, "rate limits never came back after Redis did"
                time.sleep(0.2)
        finally:
            stop(gw.proc)  # a gateway left running outlives the test run
