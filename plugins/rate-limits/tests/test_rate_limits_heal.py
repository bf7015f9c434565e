"""Rate-limit windows that heal (a private ``redis-server`` on a free port, never the shared
one): Redis restarted empty does not reset a key's rpm window or its rpd day counter, and
requests admitted fail-open while Redis was frozen count in the window (and the day) once it
answers again.

Also drills (tests/drills): each prints its figure.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rate_limits_support import Gateway, Key, RedisServer, openai_provider, start_gateway

from tollway.testing import Simulator, start_simulator, stop, wait_ready

# Timing-sensitive (real processes racing, drills): `./run test` runs it after the parallel run,
# alone on the machine.
pytestmark = pytest.mark.serial

#: Short back-off: Redis answering again is noticed within a fraction of a second.
SETTINGS = {"redis_retry_interval_seconds": 0.2}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


def _statuses(gateways: list[Gateway], key: Key, n: int) -> Counter[int]:
    with httpx.Client(timeout=20) as client:
        return Counter(
            gateways[i % len(gateways)].chat(key, client=client).status_code for i in range(n)
        )


@pytest.mark.parametrize("dimension", ["rpm", "rpd"])
def test_redis_restarted_empty_does_not_reset_the_window(
    sim: Simulator, tmp_path: Path, dimension: str
) -> None:
    limit = 20
    key = Key({"rate_limits": {dimension: limit}})
    with RedisServer(tmp_path / "redis") as server:
        common = {
            "providers": [openai_provider(sim.url)],
            "keys": [key],
            "redis_url": server.url,
            "settings": SETTINGS,
        }
        a = start_gateway(tmp_path / "a", wait=False, **common)  # type: ignore[arg-type]
        b = start_gateway(tmp_path / "b", wait=False, **common)  # type: ignore[arg-type]
        try:
            wait_ready(a)
            wait_ready(b)
            assert _statuses([a, b], key, limit) == {200: limit}
            # A key at its limit: each replica's last decision saw the whole window.
            assert _statuses([a, b], key, 2) == {429: 2}
            server.kill()
            server.start()  # the same port, no data
            after = _statuses([a, b], key, limit)
            admitted = after[200]
            print(
                f"\nDRILL redis_restarted_empty_{dimension}: {limit + admitted} admitted in "
                f"the window on an {dimension}={limit} key across 2 replicas "
                f"(overshoot {admitted})"
            )
            assert after == {429: limit}, after
            assert "rate_limit_window_restored" in a.logs() + b.logs()
        finally:
            stop(a.proc)
            stop(b.proc)


@pytest.mark.parametrize("dimension", ["rpm", "rpd"])
def test_requests_admitted_while_redis_was_frozen_count_in_the_window(
    sim: Simulator, tmp_path: Path, dimension: str
) -> None:
    limit, before, during = 10, 4, 8
    key = Key({"rate_limits": {dimension: limit}})
    with RedisServer(tmp_path / "redis") as server:
        gw = start_gateway(
            tmp_path / "gw",
            providers=[openai_provider(sim.url)],
            keys=[key],
            redis_url=server.url,
            settings=SETTINGS,
        )
        try:
            assert _statuses([gw], key, before) == {200: before}
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            results: list[int] = []
            threads = [
                threading.Thread(target=lambda: results.append(gw.chat(key).status_code))
                for _ in range(during)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert results == [200] * during  # fail open
            server.proc.send_signal(signal.SIGCONT)
            time.sleep(0.5)  # past the back-off
            after = _statuses([gw], key, 5)
            print(
                f"\nDRILL redis_paused_{dimension}: {after[200]} more admitted after Redis "
                f"resumed with {before + during} requests in the window of an "
                f"{dimension}={limit} key"
            )
            assert after == {429: 5}, after
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGCONT)
            stop(gw.proc)
