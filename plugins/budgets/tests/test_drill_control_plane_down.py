"""Drill: the standalone control plane is down for longer than the auth cache's soft bump.

One gateway (``LW_GATEWAY_BASE_URL`` → a standalone control plane, Redis for the counters and
the auth cache's L2), the provider simulator. The control plane is stopped for several soft-bump
intervals (``LW_GATEWAY_AUTH_CACHE_SOFT_BUMP``, shortened to 1 s here): the known key keeps
working from the cache, its spend waits in the budgets outbox and reaches the ledger once the
control plane is back, and a key created while it was down works afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis
from budgets_support import (
    REDIS_URL,
    Proc,
    Simulator,
    budgets_toml,
    chat_body,
    cli,
    drop_redis_keys,
    free_port,
    ledger_rows,
    new_prefix,
    post_chat,
    setup_key,
    start_control_plane,
    start_gateway,
    start_simulator,
    stop,
    wait_for,
)

# Timing-sensitive (real processes racing, drills): `./run test` runs it after the parallel run,
# alone on the machine.
pytestmark = pytest.mark.serial

pytest.importorskip("tollway_control_plane", reason="the control plane is needed")

SOFT_BUMP = 1.0
#: The outage lasts this many soft-bump intervals (the cache is bumped, goes stale again, and
#: is bumped again, several times).
OUTAGE = 3 * SOFT_BUMP


def redis_available() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False
    return True


@pytest.mark.slow
def test_control_plane_down_longer_than_the_soft_bump(tmp_path: Path) -> None:
    if not redis_available():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    prefix = new_prefix()
    cp_data, cp_port = tmp_path / "cp", free_port()
    sim: Simulator | None = None
    cp: Proc | None = None
    gw: Proc | None = None
    try:
        sim = start_simulator()
        cp = start_control_plane(cp_data, port=cp_port)
        key, secret = setup_key(cp_data, sim.url)
        gw = start_gateway(
            tmp_path / "gw",
            tmp_path / "gw" / "data",
            config=budgets_toml(prefix),
            env={
                "LW_GATEWAY_BASE_URL": f"http://127.0.0.1:{cp_port}",
                "GATEWAY_REDIS_URL": REDIS_URL,
                "LW_GATEWAY_AUTH_CACHE_SOFT_TTL": "1s",
                "LW_GATEWAY_AUTH_CACHE_SOFT_BUMP": f"{SOFT_BUMP:g}s",
            },
        )
        with httpx.Client() as client:
            assert post_chat(client, gw.url, secret, chat_body()).status_code == 200
            wait_for(lambda: len(ledger_rows(cp_data, key["id"])) == 1, 15, "the first row")

            stop(cp.proc)
            down_at = time.monotonic()
            # Created while the control plane is down (the CLI writes its store directly).
            late_key = cli(
                cp_data, "virtual-keys", "create", "--name", "late", "--scope", "project",
                "--env", "test",
            )  # fmt: skip
            served, failed = 0, []
            while time.monotonic() - down_at < OUTAGE:
                r = post_chat(client, gw.url, secret, chat_body())
                if r.status_code == 200:
                    served += 1
                else:
                    failed.append((r.status_code, r.text[:200]))
                time.sleep(0.1)
            assert len(ledger_rows(cp_data, key["id"])) == 1, "the ledger moved while down?"

            cp = start_control_plane(cp_data, port=cp_port)
            wait_for(
                lambda: len(ledger_rows(cp_data, key["id"])) == 1 + served,
                30,
                "the outage's spend to reach the ledger",
            )
            rows = ledger_rows(cp_data, key["id"])
            delivered = len(rows) - 1

            def late_key_works() -> bool:
                r = post_chat(client, gw.url, late_key["secret"], chat_body())
                return r.status_code == 200

            wait_for(late_key_works, 15, "the key created during the outage to work")
        print(
            f"\nDRILL control_plane_down_past_soft_bump: {served}/{served + len(failed)} calls "
            f"served from the cache during a {OUTAGE:g} s outage ({OUTAGE / SOFT_BUMP:g}x the "
            f"soft bump), {delivered}/{served} spend rows delivered after it came back, the key "
            "created during the outage works"
        )
        assert not failed, failed
        assert served > 0
        assert delivered == served
        assert len({r["request_id"] for r in rows}) == len(rows)  # nothing duplicated
    finally:
        for proc in (gw, cp, sim):
            if proc is not None:
                stop(proc.proc)
        drop_redis_keys(prefix)
