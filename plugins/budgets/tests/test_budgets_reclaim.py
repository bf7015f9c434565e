"""Reservations of a replica killed with SIGKILL: two gateway replicas, Redis, a standalone
control plane. While the replica lives, its heartbeat keeps its in-flight reservations (long
past their lease); once it is dead, the other replica's next admissions reclaim them within
seconds and bill them to the ledger at the reservation, marked ``usage_estimated``.

The in-flight calls set no ``max_tokens``: their reservations show the bounded estimate (the
model's max output from the price table, or ``default_max_output_tokens`` when smaller).
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from budgets_support import (
    REDIS_URL,
    PrivateRedis,
    Proc,
    Simulator,
    budgets_toml,
    cli,
    drop_redis_keys,
    free_port,
    ledger_rows,
    new_prefix,
    setup_key,
    start_control_plane,
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

LEASE = 1.5
#: [plugin.budgets] of both replicas: short leases, and no-max_tokens estimates bounded at
#: 8192 output tokens (above gpt-4's 4096 max output, below gpt-4o's 16384).
SETTINGS = {
    "reservation_lease_seconds": LEASE,
    "default_max_output_tokens": 8192,
    "output_estimate_cap_tokens": 8192,
}
#: USD per million tokens: the test provider's gpt-4o override, and the table's gpt-4.
GPT_4O = (20, 100)
GPT_4 = (30, 60)


def redis_available() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False
    return True


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


def reservations(prefix: str) -> dict[str, int]:
    """Request id → amount of every reservation held on the test's counters."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        out = {}
        for key in client.scan_iter(match=f"{prefix}:*:c"):
            for field, value in client.hgetall(key).items():
                if field.startswith(b"r:"):
                    out[field[2:].decode()] = int(value)
        return out
    finally:
        client.close()


def body(model: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {"model": model, "messages": [{"role": "user", "content": "go on"}], **extra}
    )


def estimate(model_body: bytes, prices: tuple[int, int], output_tokens: int) -> int:
    return math.ceil(len(model_body) / 4) * prices[0] + output_tokens * prices[1]


@pytest.mark.slow
def test_a_killed_replicas_reservations_are_reclaimed_and_billed(
    sim: Simulator, tmp_path: Path
) -> None:
    if not redis_available():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    prefix = new_prefix()
    cp_data, cp_port = tmp_path / "cp", free_port()
    cp: Proc | None = None
    gateways: list[Proc] = []
    try:
        cp = start_control_plane(cp_data, port=cp_port)
        key, secret = setup_key(cp_data, sim.url)
        cli(
            cp_data,
            "gateway-budgets", "create", "--scope", f"virtual_key:{key['id']}",
            "--window", "day", "--limit", "100",
        )  # fmt: skip
        env = {"LW_GATEWAY_BASE_URL": f"http://127.0.0.1:{cp_port}", "GATEWAY_REDIS_URL": REDIS_URL}
        for name in ("doomed", "survivor"):
            gateways.append(
                start_gateway(
                    tmp_path / name,
                    tmp_path / name / "data",
                    config=budgets_toml(prefix, **SETTINGS),
                    env=env,
                )
            )
        doomed, survivor = gateways
        headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}

        def call(gw: Proc, payload: bytes, **extra: str) -> httpx.Response:
            return httpx.post(
                f"{gw.url}/v1/chat/completions",
                content=payload,
                headers={**headers, **extra},
                timeout=120,
            )

        assert call(survivor, body("gpt-4o")).status_code == 200  # warm the survivor's caches

        # Two calls hang upstream on the doomed replica (no max_tokens).
        slow = {"x-simulator-latency-ms": "90000"}
        for model in ("gpt-4o", "gpt-4"):
            threading.Thread(
                target=lambda m=model: _ignore(lambda: call(doomed, body(m), **slow)),
                daemon=True,
            ).start()
        wait_for(lambda: len(reservations(prefix)) == 2, 15, "two reservations in flight")
        held = reservations(prefix)
        # The bounded estimate: gpt-4o reserves default_max_output_tokens (8192, below its
        # 16384 max output); gpt-4 its own max output from the price table (4096).
        assert sorted(held.values()) == sorted(
            [
                estimate(body("gpt-4o"), GPT_4O, 8192),
                estimate(body("gpt-4"), GPT_4, 4096),
            ]
        ), held

        # Alive, the doomed replica renews them: admissions on the survivor, long past the
        # lease, reclaim nothing.
        until = time.monotonic() + 3 * LEASE
        while time.monotonic() < until:
            assert call(survivor, body("gpt-4o", max_tokens=1)).status_code == 200
            time.sleep(0.3)
        assert set(held) <= set(reservations(prefix))

        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait()
        killed = time.monotonic()

        def reclaimed() -> bool:
            assert call(survivor, body("gpt-4o")).status_code == 200
            return not set(held) & set(reservations(prefix))

        wait_for(reclaimed, 4 * LEASE + 5, "the dead replica's reservations to be reclaimed")
        assert time.monotonic() - killed < 4 * LEASE + 5

        # The ledger bills each at its reservation, marked estimated, once.
        def rows() -> dict[str, dict[str, Any]]:
            return {r["request_id"]: r for r in ledger_rows(cp_data, key["id"])}

        wait_for(lambda: set(held) <= set(rows()), 15, "the reclaimed reservations' entries")
        ledger = rows()
        for rid, amount in held.items():
            row = ledger[rid]
            assert (row["cost_usd"], row["usage_estimated"], row["status"]) == (amount, 1, None)
            assert row["vk_id"] == key["id"]
            assert row["gateway_node_id"] != ledger_node(ledger, exclude=held)
        print(
            f"\nDRILL kill_9_cut_calls_billed: {len(held)} calls cut by kill -9 billed at their "
            f"reservation, marked estimated, {time.monotonic() - killed:.1f} s after the kill"
        )
    finally:
        for gw in gateways:
            stop(gw.proc, signal.SIGKILL)
        if cp is not None:
            stop(cp.proc)
        drop_redis_keys(prefix)
        shutil.rmtree(tmp_path, ignore_errors=True)


def ledger_node(ledger: dict[str, dict[str, Any]], exclude: dict[str, int]) -> str:
    """The node id of the survivor (it wrote the other entries)."""
    nodes = {r["gateway_node_id"] for rid, r in ledger.items() if rid not in exclude}
    assert len(nodes) == 1, nodes
    return nodes.pop()


def _ignore(fn: Any) -> None:
    try:
        fn()
    except httpx.HTTPError:
        pass  # the replica was killed under it


def static_gateway(tmp: Path, sim: Simulator, redis_url: str, prefix: str) -> tuple[Proc, str]:
    """A gateway (embedded control plane) with one static key under a roomy project budget."""
    secret = mint_key("test")
    config = (
        budgets_toml(prefix, reservation_lease_seconds=LEASE)
        + f"""
[[providers]]
name = "sim"
type = "openai"
base_url = "{sim.url}/v1"
api_key = "sk-upstream"

[[plugin.static-keys.keys]]
name = "static"
secret = "{secret}"
project_id = "proj_settle"
extras = {{ budgets = [{{ scope = "project", window = "day", limit_usd = 100 }}] }}
"""
    )
    gw = start_gateway(
        tmp / "gw", tmp / "data", config=config, env={"GATEWAY_REDIS_URL": redis_url}
    )
    return gw, secret


def test_a_client_that_leaves_releases_its_reservation(sim: Simulator, tmp_path: Path) -> None:
    """The client gives up on a call the provider takes a minute to answer: the reservation is
    released when the client leaves, not when the call would have ended or the lease lapsed."""
    if not redis_available():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    prefix = new_prefix()
    gw: Proc | None = None
    try:
        gw, secret = static_gateway(tmp_path, sim, REDIS_URL, prefix)
        headers = {
            "authorization": f"Bearer {secret}",
            "content-type": "application/json",
            "x-simulator-latency-ms": "60000",
        }
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{gw.url}/v1/chat/completions",
                content=body("gpt-4o", max_tokens=5),
                headers=headers,
                timeout=httpx.Timeout(10, read=2),
            )
        # Released (settled) within seconds of the client leaving; the heartbeat would
        # otherwise keep it for as long as the call runs.
        wait_for(lambda: not reservations(prefix), 10, "the reservation's release")
    finally:
        if gw is not None:
            stop(gw.proc, signal.SIGKILL)
        drop_redis_keys(prefix)


def test_a_settlement_that_timed_out_is_retried_when_redis_answers(
    sim: Simulator, tmp_path: Path
) -> None:
    """Redis frozen while a call ends: its settlement times out, and the reservation is
    released by the heartbeat's retry as soon as Redis answers again — not 900 s later."""
    server = PrivateRedis(tmp_path / "redis")
    prefix = new_prefix()
    gw: Proc | None = None
    try:
        gw, secret = static_gateway(tmp_path, sim, server.url, prefix)
        headers = {"authorization": f"Bearer {secret}", "x-simulator-latency-ms": "1500"}
        done: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: done.append(
                httpx.post(
                    f"{gw.url}/v1/chat/completions",
                    content=body("gpt-4o", max_tokens=5),
                    headers={**headers, "content-type": "application/json"},
                    timeout=30,
                )
            )
        )
        thread.start()
        wait_for(lambda: len(server.reservations(prefix)) == 1, 10, "the reservation")
        server.proc.send_signal(signal.SIGSTOP)  # the call ends while Redis is frozen
        thread.join(30)
        assert done and done[0].status_code == 200
        time.sleep(1.5)  # its settlement met the frozen Redis and gave up
        server.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: not server.reservations(prefix), 10, "the retried settlement")
        # The settlement that timed out ran when Redis woke up, and so did the retry: the cost
        # counts once, as the ledger has it.
        wait_for(lambda: len(ledger_rows(tmp_path / "data")) == 1, 10, "the ledger entry")
        (row,) = ledger_rows(tmp_path / "data")
        time.sleep(1)  # any further retry would have run by now
        client = redis.Redis.from_url(server.url)
        try:
            (counter,) = list(client.scan_iter(match=f"{prefix}:*:c"))
            spent, reserved = client.hmget(counter, "spent", "reserved")
            assert (int(spent or 0), int(reserved or 0)) == (row["cost_usd"], 0)
            assert row["cost_usd"] > 0
        finally:
            client.close()
    finally:
        if gw is not None:
            stop(gw.proc, signal.SIGKILL)
        server.kill()
