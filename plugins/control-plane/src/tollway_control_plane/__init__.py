"""Tollway's control plane: the store of organizations, teams, projects, model providers,
routing policies, virtual keys and budgets; the internal gateway protocol; the admin REST API;
and the ``tollway`` CLI commands on top (SPEC §1, §3, §8).

Embedded default (``LW_GATEWAY_BASE_URL`` unset): the gateway process serves the control plane
itself — the store is ``<data_dir>/tollway.db`` (or ``TOLLWAY_DATABASE_URL``), opened when the
gateway starts. Standalone: ``tollway control-plane [--host H] [--port 5560]``.

This module stays light (it is imported by every ``tollway`` invocation): Quart routes, the
store and the CLI are imported when used.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tollway import StashKey, hookimpl
from tollway.ledger import Ledger, LedgerInputError

if TYPE_CHECKING:
    import click
    from quart import Quart

    from tollway.gateway import Gateway
    from tollway.state import StateLocation
    from tollway_control_plane.runtime import ControlPlane

__all__ = ["EmbeddedLedger", "__version__", "console_page", "embedded", "embedded_ledger"]

__version__ = "0.1.0"

_CONTROL_PLANE: StashKey[ControlPlane] = StashKey("control-plane.state")


def embedded() -> bool:
    """True when this gateway serves its own control plane (``LW_GATEWAY_BASE_URL`` unset)."""
    return not os.environ.get("LW_GATEWAY_BASE_URL", "").strip()


class EmbeddedLedger:
    """The embedded control plane's ledger, called in-process (a :class:`tollway.ledger.Ledger`).

    What a spend writer (the budgets plugin) gets from ``tollway.ledger.ledger(gateway)`` when
    this gateway serves its own control plane: the same validation and idempotent insert as the
    internal protocol's ``/ledger`` and ``/spend``, with no HTTP round trip to itself and no
    signing — and usable while the gateway stops, after its server stopped listening (the store
    closes last). Store calls run in a worker thread. Raises
    :class:`tollway.ledger.LedgerInputError` for an entry or query the protocol would refuse
    with 400, ``StoreError``/``DatabaseError`` when the store fails.
    """

    name = "embedded"

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def _cp(self) -> ControlPlane:
        cp = self._gateway.stash.get(_CONTROL_PLANE)
        if cp is None:
            from tollway_control_plane.store import StoreError

            raise StoreError("the embedded control plane is not open")
        return cp

    async def record(self, entries: Sequence[dict[str, Any]], node_id: str) -> int:
        """Record a batch (entries already in the ledger are skipped); returns how many were
        accepted (all of them, or it raises)."""
        from tollway_control_plane.store import ValidationError, check_ledger_entry

        try:
            rows = [check_ledger_entry(e, f"entries[{i}]") for i, e in enumerate(entries)]
        except ValidationError as exc:
            raise LedgerInputError(exc.message) from exc
        for row in rows:
            if row["gateway_node_id"] is None:
                row["gateway_node_id"] = node_id[:512]
        await asyncio.to_thread(self._cp().store.record_ledger, rows)
        return len(rows)

    async def spend(self, queries: Sequence[dict[str, Any]]) -> list[int]:
        """Ledger sums in micro-USD, one per ``{organization_id, scope_type, scope_id, since,
        until?}`` query."""
        from tollway_control_plane.store import ValidationError, check_spend_query

        try:
            checked = [check_spend_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
        except ValidationError as exc:
            raise LedgerInputError(exc.message) from exc
        return await asyncio.to_thread(self._cp().store.ledger_spend, checked)


def console_page() -> dict[str, Any]:
    """The console, as ``describe_state`` reports a page: ``tollway serve`` and ``tollway
    control-plane`` print ``console: http://…/console (…)``."""
    if os.environ.get("TOLLWAY_ADMIN_TOKEN", "").strip():
        note = "sign in with TOLLWAY_ADMIN_TOKEN"
    else:
        note = "off until TOLLWAY_ADMIN_TOKEN is set"
    return {"label": "console", "page": "/console/", "note": note}


def embedded_ledger(gateway: Gateway) -> EmbeddedLedger | None:
    """The in-process ledger when ``gateway`` serves its own control plane, else ``None``."""
    if not embedded():
        return None
    return EmbeddedLedger(gateway)


@hookimpl
def register_ledgers(register: Callable[[Ledger], None], gateway: Gateway) -> None:
    # The embedded default records this gateway's spend in its own store, in-process (the
    # budgets plugin finds it through tollway.ledger, never by importing this package).
    ledger = embedded_ledger(gateway)
    if ledger is not None:
        register(ledger)


@hookimpl
def register_span_sinks(register: Callable[[Any], None], gateway: Gateway) -> None:
    # The embedded default keeps this gateway's request spans in its own store (no HTTP to
    # itself): the telemetry plugin uses this sink when no OTLP endpoint is configured.
    if not embedded():
        return
    from tollway_control_plane.traces import EmbeddedSpanSink

    register(EmbeddedSpanSink(lambda: gateway.stash.get(_CONTROL_PLANE)))


@hookimpl
def register_commands(cli: click.Group) -> None:
    from tollway_control_plane.cli import add_commands

    add_commands(cli)


@hookimpl
def register_routes(app: Quart, gateway: Gateway) -> None:
    if not embedded():
        from tollway.server import supervised_control_plane

        # A worker of `serve --workers N`: the embedded control plane runs in the supervisor's
        # child process; this port still answers its API, relayed there.
        url = supervised_control_plane()
        if url is not None:
            from tollway_control_plane.relay import mount_relay

            mount_relay(app, url)
        return
    from tollway_control_plane.protocol import mount

    mount(app, lambda: gateway.stash[_CONTROL_PLANE])


@hookimpl
async def gateway_started(gateway: Gateway) -> None:
    if not embedded():
        return
    from tollway_control_plane.runtime import ControlPlane

    settings = gateway.settings
    cp = await asyncio.to_thread(
        ControlPlane.open,
        settings.data_dir,
        None,
        environment=settings.environment,
        config_providers=settings.providers,
        outbound=getattr(gateway, "outbound", None),
    )
    cp.stopping = lambda: gateway.draining
    gateway.stash[_CONTROL_PLANE] = cp


@hookimpl(trylast=True)
def gateway_stopping(gateway: Gateway) -> None:
    # Last: other plugins' final flushes (the budgets outbox → the ledger) still need the
    # embedded control plane while they stop.
    cp = gateway.stash.get(_CONTROL_PLANE)
    if cp is not None:
        cp.close()


@hookimpl
def describe_state(state: StateLocation, gateway: Gateway | None) -> dict[str, Any] | None:
    if gateway is None:  # tollway status, and serve's "using …" lines: find, never create
        from tollway_control_plane.cli import describe_cli_state

        report = describe_cli_state(state)
        if embedded():  # tollway serve prints where the console is
            report["console"] = console_page()
        return report
    cp = gateway.stash.get(_CONTROL_PLANE)
    if cp is None:
        from tollway.server import supervised_control_plane

        if supervised_control_plane() is None:
            return None
        # A worker of `serve --workers N`: the store is the supervisor's control plane's, the
        # one of this data dir (read, never created), so `tollway status` can compare.
        from tollway_control_plane.runtime import locate_store

        try:
            where = locate_store(gateway.settings.data_dir)
        except Exception:  # an unreachable PostgreSQL: readiness reports it, not this
            return None
        return {"store": {"kind": where.kind, "id": where.id}} if where.exists else None
    return {"store": {"kind": cp.store.db.dialect, "id": cp.store.store_id}}


@hookimpl
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    cp = gateway.stash.get(_CONTROL_PLANE)
    if cp is None:
        return None

    async def control_plane_store() -> None:
        await asyncio.to_thread(cp.store.ping)

    return {"control_plane_store": control_plane_store}
