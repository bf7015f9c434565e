"""Counters that heal: Redis frozen (SIGSTOP) while calls go on, fail-open, then resumed with
its data. The calls admitted without Redis are in the ledger; the gateway replays them into
the Redis counter as soon as Redis answers, so the counter that blocks equals the ledger again
(before: it missed them, and a block budget could be overspent by the whole outage's spend).

Also a drill (tests/drills): it prints the counter's share of the ledger.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from budgets_support import (
    PrivateRedis,
    Proc,
    Simulator,
    budgets_toml,
    ledger_rows,
    new_prefix,
    start_gateway,
    start_simulator,
    stop,
    wait_for,
)

from tollway.keys import mint_key

# Timing-sensitive (real processes racing, drills): `./run test` runs it after the parallel run,
# alone on the machine.
pytestmark = pytest.mark.serial

pytest.importorskip("tollway_control_plane", reason="the control plane is needed")

#: Calls made while Redis is frozen.
DURING = 6


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    try:
        yield s
    finally:
        s.proc.terminate()
        s.proc.wait(10)


def _gateway(tmp: Path, sim: Simulator, redis_url: str, prefix: str) -> tuple[Proc, str]:
    secret = mint_key("test")
    config = (
        budgets_toml(prefix, reservation_lease_seconds=1.5)
        + f"""
[[providers]]
name = "sim"
type = "openai"
base_url = "{sim.url}/v1"
api_key = "sk-upstream"
config = {{ prices = {{ "gpt-4o" = {{ input_per_mtok = 20, output_per_mtok = 100 }} }} }}

[[plugin.static-keys.keys]]
name = "static"
secret = "{secret}"
project_id = "proj_heal"
extras = {{ budgets = [{{ scope = "project", window = "day", limit_usd = 100 }}] }}
"""
    )
    gw = start_gateway(
        tmp / "gw", tmp / "data", config=config, env={"GATEWAY_REDIS_URL": redis_url}
    )
    return gw, secret


def counter_spent(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        (key,) = list(client.scan_iter(match=f"{prefix}:*:c"))
        return int(client.hget(key, "spent") or 0)
    finally:
        client.close()


def test_spend_admitted_while_redis_was_frozen_reaches_the_counter(
    sim: Simulator, tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path / "redis")
    prefix = new_prefix()
    gw: Proc | None = None
    try:
        gw, secret = _gateway(tmp_path, sim, server.url, prefix)
        headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
        payload = orjson.dumps(
            {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        )

        def call() -> httpx.Response:
            assert gw is not None
            return httpx.post(
                f"{gw.url}/v1/chat/completions", content=payload, headers=headers, timeout=30
            )

        assert call().status_code == 200  # seeds the counter
        wait_for(lambda: counter_spent(server.url, prefix) > 0, 10, "the first settlement")
        server.proc.send_signal(signal.SIGSTOP)
        # Concurrently, as under load: one request probes the frozen Redis, the rest fail open.
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(call().status_code))
            for _ in range(DURING)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [200] * DURING
        server.proc.send_signal(signal.SIGCONT)
        # Healed by the heartbeat or by the next admission, whichever comes first; the next
        # admission below decides on the healed counter either way.
        assert call().status_code == 200
        wait_for(lambda: len(ledger_rows(tmp_path / "data")) == DURING + 2, 15, "the ledger")
        ledger = sum(int(r["cost_usd"]) for r in ledger_rows(tmp_path / "data"))
        wait_for(lambda: counter_spent(server.url, prefix) == ledger, 10, "the healed counter")
        print(
            f"\nDRILL redis_paused_budget: counter/ledger = "
            f"{counter_spent(server.url, prefix) / ledger:.0%} after {DURING} calls admitted "
            "fail-open"
        )
    finally:
        if gw is not None:
            stop(gw.proc, signal.SIGKILL)
        server.kill()
