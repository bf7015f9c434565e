"""Several processes sharing the budgets: a standalone control plane, gateway replicas, Redis.

* Two replicas + Redis + the control plane, 160 concurrent calls against a small budget: the
  admitted spend stays within the limit plus one reservation (every estimate here is ≥ its
  call's cost), and the ledger equals the sum of the per-request costs exactly.
* A gateway killed with SIGKILL mid-traffic and restarted: every call a client saw complete
  is in the ledger exactly once.
* The control plane down: the outbox keeps the entries, ``/readyz`` says ``outbox_writer:
  stale …``, and everything reaches the ledger once it is back.
"""

from __future__ import annotations

import shutil
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from budgets_support import (
    PRICE_IN,
    PRICE_OUT,
    REDIS_URL,
    Proc,
    Simulator,
    budgets_toml,
    cli,
    cost_of,
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

# Timing-sensitive (real processes racing, drills): `./run test` runs it after the parallel run,
# alone on the machine.
pytestmark = pytest.mark.serial

pytest.importorskip("tollway_control_plane", reason="the control plane is needed")

MAX_TOKENS = 20


def redis_available() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False
    return True


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


class Cluster:
    def __init__(self, tmp: Path, sim: Simulator) -> None:
        self.tmp = tmp
        self.sim = sim
        self.cp_data = tmp / "cp"
        self.cp_port = free_port()
        self.cp: Proc | None = None
        self.gateways: list[Proc] = []
        self.prefix = new_prefix()

    def start_cp(self) -> Proc:
        self.cp = start_control_plane(self.cp_data, port=self.cp_port)
        return self.cp

    def gateway(self, name: str, *, redis_url: str | None = None, **settings: Any) -> Proc:
        env = {"LW_GATEWAY_BASE_URL": f"http://127.0.0.1:{self.cp_port}"}
        if redis_url:
            env["GATEWAY_REDIS_URL"] = redis_url
        gw = start_gateway(
            self.tmp / name,
            self.tmp / name / "data",
            config=budgets_toml(self.prefix, **settings),
            env=env,
        )
        self.gateways.append(gw)
        return gw


@pytest.fixture
def cluster(sim: Simulator, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, sim)
    c.start_cp()
    try:
        yield c
    finally:
        for gw in c.gateways:
            stop(gw.proc, signal.SIGKILL)
        if c.cp is not None:
            stop(c.cp.proc)
        drop_redis_keys(c.prefix)
        shutil.rmtree(tmp_path, ignore_errors=True)


def chat(
    client: openai.OpenAI, words: int, max_tokens: int | None = MAX_TOKENS
) -> tuple[int, str, Any]:
    """(status, request id, usage or error) of one call (``max_tokens`` None: not sent)."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": " ".join(["spend"] * words)}],
            **({} if max_tokens is None else {"max_tokens": max_tokens}),
        )
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.headers.get("x-langwatch-request-id", ""), exc
    return 200, raw.headers["x-langwatch-request-id"], raw.parse().usage


#: Output tokens reserved for a call without max_tokens: gpt-4o's max output (16384 in the
#: price table) bounded by default_max_output_tokens (4096).
NO_MAX_TOKENS_ESTIMATE = 4096


@pytest.mark.slow
@pytest.mark.parametrize("max_tokens", [MAX_TOKENS, None], ids=["max_tokens", "no_max_tokens"])
def test_replicas_racing_at_the_limit(cluster: Cluster, max_tokens: int | None) -> None:
    """A drill (tests/drills): 2 replicas, 100 concurrent clients, a block budget."""
    if not redis_available():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    key, secret = setup_key(cluster.cp_data, cluster.sim.url)
    budget = cli(
        cluster.cp_data,
        "gateway-budgets", "create", "--scope", f"virtual_key:{key['id']}",
        "--window", "day", "--limit", "0.06",
    )  # fmt: skip
    limit = budget["limit_micro_usd"]
    replicas = [cluster.gateway(f"gw{i}", redis_url=REDIS_URL) for i in range(2)]
    clients = [
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0, timeout=30)
        for gw in replicas
    ]
    # Warm both replicas' auth caches with one call each (they count against the budget).
    warm = 0
    for client in clients:
        status, _, usage = chat(client, 3)
        assert status == 200
        warm += cost_of(usage.prompt_tokens, usage.completion_tokens)

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(lambda i: chat(clients[i % 2], 3 + i % 7, max_tokens), range(160)))
    statuses = [r[0] for r in results]
    assert set(statuses) == {200, 402}, statuses
    ok = [(rid, usage) for status, rid, usage in results if status == 200]
    costs = {rid: cost_of(u.prompt_tokens, u.completion_tokens) for rid, u in ok}
    total = sum(costs.values())
    # Every estimate here is ≥ its call's cost (input ceil(bytes/4) ≥ the simulator's floor,
    # output min(max_tokens, cap) = max_tokens ≥ what it produced; without max_tokens the
    # bounded estimate), so the replicas racing at the limit overshoot by at most one call's
    # reservation.
    max_prompt = max(u.prompt_tokens for _, u in ok)
    output = NO_MAX_TOKENS_ESTIMATE if max_tokens is None else max_tokens
    one_reservation = (max_prompt + 1) * PRICE_IN + output * PRICE_OUT
    print(
        f"\nDRILL block_budget_100_concurrency[{'max_tokens' if max_tokens else 'none'}]: "
        f"spend {float((total + warm) / limit):.0%} of the limit "
        f"(bound {float((limit + one_reservation) / limit):.0%}), {len(ok)} of 160 admitted"
    )
    assert total + warm <= limit + one_reservation, (total, limit, one_reservation)
    assert len(ok) < 160  # the budget did stop them

    # The ledger: each completed call once, at exactly the cost its usage implies.
    def rows() -> dict[str, dict[str, Any]]:
        return {r["request_id"]: r for r in ledger_rows(cluster.cp_data, key["id"])}

    wait_for(lambda: set(costs) <= set(rows()), 15, "the outboxes to drain")
    ledger = rows()
    assert len(ledger) == len(costs) + 2  # + the two warm-up calls
    assert {rid: ledger[rid]["cost_usd"] for rid in costs} == costs
    ledger_total = sum(r["cost_usd"] for r in ledger.values())
    assert len({r["gateway_node_id"] for r in ledger.values()}) == 2  # both replicas wrote
    assert ledger_total == total + warm
    # The shared counter in Redis agrees with the ledger, nothing left reserved. Settlements
    # reach Redis after the answer (queued up to 50 ms, a failed one retried by the heartbeat
    # every third of the 10 s lease), so a ledger row can land first: wait for them, bounded
    # by the heartbeat.
    client = redis.Redis.from_url(REDIS_URL)
    seen: list[tuple[int, int]] = []

    def settled() -> bool:
        (counter,) = [k for k in client.scan_iter(match=f"{cluster.prefix}:*:c")]
        spent, reserved = client.hmget(counter, "spent", "reserved")
        seen.append((int(spent or 0), int(reserved or 0)))
        return seen[-1] == (ledger_total, 0)

    try:
        wait_for(settled, 8, "the counter to settle")
    except AssertionError as exc:
        wanted = (ledger_total, 0)
        raise AssertionError(f"counter (spent, reserved) {seen[-1]} != {wanted}") from exc
    finally:
        client.close()
    (listed,) = [
        b for b in cli(cluster.cp_data, "gateway-budgets", "list") if b["id"] == budget["id"]
    ]
    assert listed["spend_micro_usd"] == ledger_total

    # Redis loses its data: the next admission seeds the counter from the ledger again.
    drop_redis_keys(cluster.prefix)
    status, _, usage = chat(clients[0], 3)
    assert status == (200 if ledger_total < limit else 402)
    expected = ledger_total
    if status == 200:
        expected += cost_of(usage.prompt_tokens, usage.completion_tokens)

    def counter() -> tuple[int, int]:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            (key,) = list(client.scan_iter(match=f"{cluster.prefix}:*:c"))
            spent, reserved = client.hmget(key, "spent", "reserved")
            return int(spent or 0), int(reserved or 0)
        finally:
            client.close()

    wait_for(lambda: counter() == (expected, 0), 5, "the re-seeded counter")


@pytest.mark.slow
def test_kill_9_mid_traffic_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    key, secret = setup_key(cluster.cp_data, cluster.sim.url)
    gw = cluster.gateway("gw", outbox_stale_seconds=1)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0, timeout=10)
    assert chat(client, 3)[0] == 200
    completed: list[tuple[str, int]] = []
    sent = [0]
    stop_flag = threading.Event()
    lock = threading.Lock()

    def worker(n: int) -> None:
        while not stop_flag.is_set():
            with lock:
                sent[0] += 1
            try:
                if n % 2:
                    stream = client.chat.completions.create(
                        model="gpt-4o",
                        messages=[{"role": "user", "content": "stream spend"}],
                        max_tokens=MAX_TOKENS,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    rid = stream.response.headers["x-langwatch-request-id"]
                    usage = None
                    for chunk in stream:
                        usage = chunk.usage or usage
                    assert usage is not None
                    cost = cost_of(usage.prompt_tokens, usage.completion_tokens)
                else:
                    status, rid, usage = chat(client, 4)
                    if status != 200:
                        continue
                    cost = cost_of(usage.prompt_tokens, usage.completion_tokens)
            except (openai.APIError, httpx.HTTPError, AssertionError):
                if gw.proc.poll() is not None:
                    return
                continue
            with lock:
                completed.append((rid, cost))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(completed) >= 150, 20, "traffic")
    gw.proc.send_signal(signal.SIGKILL)  # mid-traffic: no flush, no cleanup
    gw.proc.wait()
    stop_flag.set()
    for t in threads:
        t.join(timeout=15)
    cluster.gateways.remove(gw)
    done = dict(completed)
    assert len(done) == len(completed)

    # Restarted on the same data dir, the gateway adopts its previous life's spool.
    again = cluster.gateway("gw", outbox_stale_seconds=1)

    def rows() -> dict[str, dict[str, Any]]:
        return {r["request_id"]: r for r in ledger_rows(cluster.cp_data, key["id"])}

    wait_for(lambda: set(done) <= set(rows()), 15, "the adopted spool to drain")
    ledger = rows()  # (request_id is the ledger's primary key: no duplicates by construction)
    missing = set(done) - set(ledger)
    assert not missing, f"{len(missing)} completed call(s) missing from the ledger"
    assert all(ledger[rid]["cost_usd"] == cost for rid, cost in done.items())
    print(
        f"\nDRILL kill_9_under_load: ledger == client-side sum for {len(done)} completed calls "
        f"({sum(done.values())} micro-USD); {len(ledger) - len(done) - 1} cut calls billed"
    )
    # Rows beyond the completed calls: only calls cut by the kill (spooled, never answered).
    assert len(ledger) <= sent[0] + 1

    # The control plane goes away: the outbox keeps what it cannot send and says so.
    client = openai.OpenAI(base_url=f"{again.url}/v1", api_key=secret, max_retries=0, timeout=10)
    status, warm_rid, _ = chat(client, 3)  # (the key is now in this process's auth cache)
    assert status == 200
    wait_for(lambda: warm_rid in rows(), 5, "the warm-up call's ledger row")
    assert cluster.cp is not None
    stop(cluster.cp.proc)
    during = [chat(client, 5) for _ in range(3)]  # the key is cached: served stale-while-error
    assert [s for s, _, _ in during] == [200, 200, 200]

    def readiness() -> httpx.Response:
        return httpx.get(f"{again.url}/readyz", timeout=5)

    wait_for(lambda: readiness().status_code == 503, 5, "readiness to report the stale outbox")
    check = readiness().json()["checks"]["outbox_writer"]
    assert check.startswith("stale 3 entries, oldest "), check
    cluster.start_cp()
    wait_for(lambda: readiness().status_code == 200, 15, "the outbox to catch up")
    assert {rid for _, rid, _ in during} <= set(rows())
