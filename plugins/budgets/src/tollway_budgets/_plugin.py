"""Start-up, shutdown and readiness: the price table, the counters' store, and the ledger (the
control plane: embedded in this process, or over HTTP) with its durable outbox."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollway import hookimpl
from tollway.redis import BACKEND_ERRORS, round_trip_deadline, shared
from tollway.routing import MAX_OUTPUT_LOOKUP
from tollway.secrets import load_gateway_secrets
from tollway_budgets._client import ControlPlaneClient, LocalControlPlane, embedded_base_url
from tollway_budgets._leases import heartbeat
from tollway_budgets._outbox import Outbox
from tollway_budgets._prices import PriceError, Prices, PriceTable, parse_override
from tollway_budgets._settings import NAME, BudgetSettings
from tollway_budgets._state import APP, STATE, State, failure_policy
from tollway_budgets._store import LocalStore, RedisStore

if TYPE_CHECKING:
    from quart import Quart

    from tollway.gateway import Gateway

__all__ = [
    "gateway_started",
    "gateway_stopping",
    "readiness_checks",
    "register_routes",
    "register_settings",
]

log = logging.getLogger("tollway.budgets")

_INTERNAL_PREFIX = "/api/internal/gateway/"


@hookimpl
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    register(NAME, BudgetSettings)


@hookimpl
def register_routes(app: Quart, gateway: Gateway) -> None:
    """Remember the app, to see at start-up whether an embedded control plane serves it."""
    gateway.stash[APP] = app


def _control_plane_url(gateway: Gateway) -> str | None:
    base = os.environ.get("LW_GATEWAY_BASE_URL", "").strip().rstrip("/")
    if base:
        return base
    app = gateway.stash.get(APP)
    if app is not None and any(
        rule.rule.startswith(_INTERNAL_PREFIX) for rule in app.url_map.iter_rules()
    ):
        return embedded_base_url(gateway.settings.server.addr)
    return None


def _embedded_ledger(gateway: Gateway) -> Any:
    """The in-process ledger an installed plugin offers (no HTTP to our own port), if any."""
    from tollway.ledger import ledger

    return ledger(gateway)


@hookimpl
async def gateway_started(gateway: Gateway) -> None:
    settings: BudgetSettings = gateway.settings.plugin(NAME)
    problems = settings.problems()
    unknown: Prices | None = None
    if settings.unknown_model_prices is not None:
        try:
            unknown = Prices.per_mtok(settings.unknown_model_prices, source="default")
        except PriceError as exc:
            problems.append(f"plugin.{NAME}.unknown_model_prices.{exc}")
    for i, provider in enumerate(gateway.settings.providers):
        try:
            parse_override(provider.config.get("prices"), f"providers[{i}].config.prices")
        except PriceError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    table = await asyncio.to_thread(PriceTable.packaged)
    # The models' maximum output caps the max_tokens the gateway fills in (tollway.routing).
    gateway.stash[MAX_OUTPUT_LOOKUP] = table.max_output
    store: LocalStore | RedisStore
    redis = shared(gateway, NAME, max_connections=settings.redis_max_connections)
    if redis is not None:
        deadline = round_trip_deadline(
            settings.redis_socket_timeout_seconds, settings.redis_connect_timeout_seconds
        )
        store = RedisStore(redis.client, deadline)
    else:
        store = LocalStore()
    base = _control_plane_url(gateway)
    client: ControlPlaneClient | LocalControlPlane | None = None
    outbox: Outbox | None = None
    node_id = f"{os.uname().nodename}:{os.getpid()}"
    if base is not None:
        local = (
            _embedded_ledger(gateway)
            if base == embedded_base_url(gateway.settings.server.addr)
            else None
        )
        if local is not None:
            client = LocalControlPlane(local, node_id)
            base = "embedded"
        else:
            secrets = load_gateway_secrets(gateway.settings.data_dir)
            client = ControlPlaneClient(base, secrets.internal, node_id)
        await client.start()
        outbox = Outbox(
            Path(gateway.settings.data_dir) / "budgets-outbox",
            client,
            interval=settings.outbox_flush_interval_seconds,
            batch_size=settings.outbox_batch_size,
        )
        await asyncio.to_thread(outbox.open)
        outbox.start()
    else:
        log.warning(
            "budgets_no_control_plane: LW_GATEWAY_BASE_URL is unset and no embedded control "
            "plane is installed; budgets are enforced from this gateway's counters only and no "
            "spend reaches a ledger"
        )
    state = State(
        settings, table, store, client, outbox, node_id, unknown, failure_policy(settings), redis
    )
    gateway.stash[STATE] = state
    if redis is not None:
        state.policy.share(redis)  # one back-off and one probe for every plugin
    if isinstance(store, RedisStore):
        state.heartbeat = gateway.spawn_daemon(heartbeat(state))
        try:
            await store.ping()
        except BACKEND_ERRORS as exc:
            state.policy.failed(exc, "start-up")
    log.info(
        "budgets_ready counters=%s ledger=%s prices=%d",
        "redis" if state.redis else "memory",
        base or "off",
        len(table),
    )


@hookimpl
async def gateway_stopping(gateway: Gateway) -> None:
    state = gateway.stash.get(STATE)
    if state is None:
        return
    if state.tasks:
        await asyncio.wait(list(state.tasks), timeout=2)
    if state.heartbeat is not None:
        state.heartbeat.cancel()
    if state.outbox is not None:
        await state.outbox.close(state.settings.outbox_drain_seconds)
    if state.client is not None:
        await state.client.close()
    if state.facility is not None:
        await state.facility.release(NAME)


@hookimpl
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    state = gateway.stash.get(STATE)
    if state is None or state.outbox is None:
        return None
    outbox = state.outbox
    stale_after = state.settings.outbox_stale_seconds

    def outbox_writer() -> str:
        age = outbox.oldest_age()
        if outbox.pending and age > stale_after:
            why = f" (last error: {outbox.last_error})" if outbox.last_error else ""
            return f"stale {len(outbox.pending)} entries, oldest {int(age)}s{why}"
        return "ok"

    return {"outbox_writer": outbox_writer}
