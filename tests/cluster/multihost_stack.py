"""The multi-host stack of tests/cluster: 3 gateways, each on a test host of its own (a network
namespace), a Redis Cluster (3 masters + 3 replicas), two control planes on one PostgreSQL
schema behind a TCP load balancer, and the provider simulator — all made and removed here.

The pieces are :mod:`tollway.testing` and :mod:`tollway.testing_hosts`; this module only puts
them together the way an operator would (production ``ENVIRONMENT`` with the hosts' network in
``GATEWAY_OUTBOUND_ALLOW_CIDRS``, ``GATEWAY_REDIS_CLUSTER=true``, ``LW_GATEWAY_BASE_URL`` at the
load balancer).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tollway.testing import (
    GatewayProcess,
    Simulator,
    cli_json,
    plugin_allow_list,
    start_gateway,
    start_simulator,
    stop,
    wait_ready,
)
from tollway.testing_hosts import (
    ControlPlaneProcess,
    Hosts,
    RedisClusterProcess,
    TcpBalancer,
    start_control_plane,
    start_redis_cluster,
)

PG_BASE = os.environ.get("TOLLWAY_TEST_PG_URL", "postgresql://{user}@127.0.0.1:5432/test")
ADMIN_TOKEN = "multihost-admin-token-0123456789abcdef"
SECRETS = {
    "LW_VIRTUAL_KEY_PEPPER": "multihost-pepper-0123456789abcdef0123",
    "LW_GATEWAY_INTERNAL_SECRET": "multihost-internal-0123456789abcdef",
    "LW_GATEWAY_JWT_SECRET": "multihost-jwt-secret-0123456789abcdef",
}
GATEWAY_PLUGINS = [
    "tollway_vk_auth",
    "tollway_budgets",
    "tollway_rate_limits",
    "tollway_provider_openai",
]
#: USD per million tokens = micro-USD per token: a call's cost is an exact integer.
PRICE_IN, PRICE_OUT = 20, 100
MAX_TOKENS = 20
#: The last gateway refuses what Redis cannot decide; the others admit it (the default).
FAIL_CLOSED = """
[plugin.tollway-rate-limits]
on_redis_error = "fail_closed"

[plugin.budgets]
on_redis_error = "fail_closed"
"""


def cost_of(usage: dict[str, int]) -> int:
    return usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without Tollway's variables, plus the shared secrets."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LW_", "TOLLWAY_", "GATEWAY_")) and k != "ENVIRONMENT"
    }
    env.update(SECRETS)
    env.update(extra)
    return env


class PgSchema:
    """A fresh PostgreSQL schema in database ``test``, dropped by :meth:`drop`."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"tollway_multihost_{secrets.token_hex(5)}"
        last: Exception | None = None
        for user in ("postgres", "root"):
            base = PG_BASE.format(user=user)
            try:
                self.conn = psycopg.connect(base, autocommit=True, connect_timeout=3)
            except psycopg.Error as exc:
                last = exc
                continue
            self.conn.execute(f"CREATE SCHEMA {self.name}")
            self.url = f"{base}?options=-csearch_path%3D{self.name}"
            return
        raise OSError(f"PostgreSQL is not reachable at {PG_BASE}: {last}")

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(f"SET search_path TO {self.name}")
            cur.execute(sql, params)
            return list(cur.fetchall())

    def drop(self) -> None:
        self.conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
        self.conn.close()


class Stack:
    """Everything a multi-host test talks to; :meth:`close` removes it all."""

    def __init__(self, tmp: Path, hosts: Hosts) -> None:
        self.tmp = tmp
        self.hosts = hosts
        self.pg: PgSchema | None = None
        self.redis: RedisClusterProcess | None = None
        self.sim: Simulator | None = None
        self.cps: list[ControlPlaneProcess] = []
        self.balancer: TcpBalancer | None = None
        self.gateways: list[GatewayProcess] = []
        self.provider: dict[str, Any] = {}
        #: The index of the gateway configured with :data:`FAIL_CLOSED`.
        self.fail_closed = 2
        self.http = httpx.Client(timeout=20)

    # --- start and stop --------------------------------------------------------------------

    def start(self, gateways: int = 3) -> Stack:
        at = self.hosts.bridge_ip
        allow = self.hosts.network
        self.pg = PgSchema()
        self.redis = start_redis_cluster(self.tmp / "redis", host=at)
        self.sim = start_simulator("--host", at)
        cp_env = base_env(
            ENVIRONMENT="production",
            GATEWAY_OUTBOUND_ALLOW_CIDRS=allow,
            TOLLWAY_DATABASE_URL=self.pg.url,
            TOLLWAY_ADMIN_TOKEN=ADMIN_TOKEN,
            TOLLWAY_PLUGINS="tollway-control-plane",
        )
        for name in ("cp-a", "cp-b"):
            self.cps.append(start_control_plane(self.tmp / name, cp_env, host=at))
        self.balancer = TcpBalancer(at, [cp.address for cp in self.cps]).start()
        # The operator's first steps, with the CLI against control plane A.
        self.provider = self.cli(
            0, "model-providers", "create", "--type", "openai", "--name", "sim",
            "--base-url", f"{self.sim.url}/v1", "--api-key", "sk-upstream-test",
            "--config-json", f'{{"prices": {{"gpt-4o": {{"input_per_mtok": {PRICE_IN}, '
            f'"output_per_mtok": {PRICE_OUT}}}}}}}',
        )  # fmt: skip
        gw_env = base_env(
            ENVIRONMENT="production",
            GATEWAY_OUTBOUND_ALLOW_CIDRS=allow,
            LW_GATEWAY_BASE_URL=self.balancer.url,
            GATEWAY_REDIS_URL=self.redis.url,
            GATEWAY_REDIS_CLUSTER="true",
            GATEWAY_OTEL_DEFAULT_ENDPOINT="",
            TOLLWAY_PLUGINS=plugin_allow_list(GATEWAY_PLUGINS),
            LOG_FORMAT="json",
            SERVER_DRAIN_DELAY_SECONDS="0",
        )
        for i in range(gateways):
            host = self.hosts[i % len(self.hosts)]
            self.gateways.append(
                start_gateway(
                    self.tmp / f"gw{i}",
                    FAIL_CLOSED if i == self.fail_closed else "",
                    env={**gw_env, "TOLLWAY_DATA_DIR": str(self.tmp / f"gw{i}" / "data")},
                    keys=[],
                    wait=False,
                    host=host.ip,
                    exec_prefix=host.exec_prefix,
                )
            )
        for gw in self.gateways:
            wait_ready(gw, 60)
        return self

    def close(self) -> None:
        for gw in self.gateways:
            stop(gw.proc, timeout=15)
        if self.balancer is not None:
            self.balancer.stop()
        for cp in self.cps:
            stop(cp.proc)
        if self.sim is not None:
            stop(self.sim.proc)
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None:
            self.pg.drop()
        self.http.close()

    # --- the control planes ----------------------------------------------------------------

    def cli(self, cp: int, *args: str) -> Any:
        """``tollway ARGS --json`` against control plane ``cp``'s admin API (remote mode)."""
        env = base_env(
            TOLLWAY_ADMIN_URL=self.cps[cp].url,
            TOLLWAY_ADMIN_TOKEN=ADMIN_TOKEN,
            TOLLWAY_PLUGINS="tollway-control-plane",
            TOLLWAY_DATA_DIR=str(self.tmp / "cli"),
        )
        return cli_json(env, *args)

    def admin(self, cp: int, method: str, path: str, body: Any = None) -> Any:
        """A call to control plane ``cp``'s admin API (what the CLI's remote mode sends; much
        faster than a ``tollway`` process per call)."""
        resp = self.http.request(
            method,
            f"{self.cps[cp].url}/api/admin{path}",
            json=body,
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def new_key(self, cp: int = 0, **config: Any) -> dict[str, Any]:
        """A fresh virtual key (its JSON, with ``secret``) with ``config``, made on ``cp``."""
        body = {"name": f"k-{secrets.token_hex(3)}", "env": "test", "config": config}
        key: dict[str, Any] = self.admin(cp, "POST", "/virtual-keys", body)
        return key

    def new_budget(self, key: dict[str, Any], limit_usd: str) -> dict[str, Any]:
        """A ``day`` block budget on ``key``."""
        body = {"scope": f"virtual_key:{key['id']}", "window": "day", "limit_usd": limit_usd}
        budget: dict[str, Any] = self.admin(0, "POST", "/budgets", body)
        return budget

    def ledger(self, vk_id: str) -> dict[str, int]:
        """The ledger's rows of a key: request id → cost (micro-USD)."""
        assert self.pg is not None
        rows = self.pg.rows("SELECT request_id, cost_usd FROM ledger WHERE vk_id = %s", vk_id)
        return {str(r): int(c) for r, c in rows}

    # --- traffic ---------------------------------------------------------------------------

    def chat(self, gw: GatewayProcess, secret: str, words: int = 3) -> tuple[int, dict[str, Any]]:
        """One chat completion: (status, JSON body with the request id as ``_request_id``)."""
        resp = self.http.post(
            f"{gw.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": " ".join(["spend"] * words)}],
                "max_tokens": MAX_TOKENS,
            },
        )
        body: dict[str, Any] = resp.json()
        body["_request_id"] = resp.headers.get("x-langwatch-request-id", "")
        body["_request_bytes"] = len(resp.request.content)
        body["_limited"] = "x-ratelimit-remaining-requests" in resp.headers
        return resp.status_code, body

    def burst(
        self, secret: str, calls: int, workers: int = 12, words: Callable[[int], int] = lambda i: 3
    ) -> list[tuple[int, dict[str, Any]]]:
        """``calls`` concurrent calls spread round-robin over every gateway."""
        gws = self.gateways
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(
                pool.map(lambda i: self.chat(gws[i % len(gws)], secret, words(i)), range(calls))
            )

    def refused_everywhere(self, secret: str) -> bool:
        return all(self.chat(gw, secret)[0] == 401 for gw in self.gateways)

    def spend_to_the_cap(self, limit_usd: str, calls: int) -> dict[str, int]:
        """A fresh key with a ``day`` block budget of ``limit_usd``, ``calls`` concurrent calls
        over every gateway; asserts the documented bound (spend below the limit plus one
        call's estimate: every answer here stays within ``max_tokens``) and the ledger: each
        completed call exactly once at its cost, nothing else. Returns the figures."""
        key = self.new_key()
        budget = self.new_budget(key, limit_usd)
        limit = int(budget["limit_micro_usd"])
        results = self.burst(key["secret"], calls, words=lambda i: 3 + i % 7)
        statuses = sorted({s for s, _ in results})
        assert statuses == [200, 402], statuses
        ok = {b["_request_id"]: cost_of(b["usage"]) for s, b in results if s == 200}
        spent = sum(ok.values())
        estimate = max(
            -(-b["_request_bytes"] // 4) * PRICE_IN + MAX_TOKENS * PRICE_OUT for _, b in results
        )
        ledger: dict[str, int] = {}

        def recorded() -> bool:
            ledger.update(self.ledger(key["id"]))
            return set(ok) <= set(ledger)

        poll_seconds(recorded, 20, "the gateways' outboxes to reach the ledger")
        figures = {
            "limit": limit,
            "spent": spent,
            "ledger": sum(ledger.values()),
            "estimate": estimate,
            "admitted": len(ok),
            "refused": len(results) - len(ok),
        }
        print(f"budget {figures}")
        assert ledger == ok  # every completed call once, at its cost; no refused call
        assert spent < limit + estimate
        return figures


def poll_seconds(predicate: Callable[[], bool], within: float, what: str) -> float:
    """Poll ``predicate`` until true; return how long it took (raise after ``within`` s)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start
