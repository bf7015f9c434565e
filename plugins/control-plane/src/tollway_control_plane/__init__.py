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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tollway import StashKey, hookimpl

if TYPE_CHECKING:
    import click
    from quart import Quart

    from tollway.gateway import Gateway
    from tollway_control_plane.runtime import ControlPlane

__all__ = ["__version__", "embedded"]

__version__ = "0.1.0"

_CONTROL_PLANE: StashKey[ControlPlane] = StashKey("control-plane.state")


def embedded() -> bool:
    """True when this gateway serves its own control plane (``LW_GATEWAY_BASE_URL`` unset)."""
    return not os.environ.get("LW_GATEWAY_BASE_URL", "").strip()


@hookimpl
def register_commands(cli: click.Group) -> None:
    from tollway_control_plane.cli import add_commands

    add_commands(cli)


@hookimpl
def register_routes(app: Quart, gateway: Gateway) -> None:
    if not embedded():
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
        ControlPlane.open, settings.data_dir, None, environment=settings.environment
    )
    cp.stopping = lambda: gateway.draining
    gateway.stash[_CONTROL_PLANE] = cp


@hookimpl
def gateway_stopping(gateway: Gateway) -> None:
    cp = gateway.stash.get(_CONTROL_PLANE)
    if cp is not None:
        cp.close()


@hookimpl
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    cp = gateway.stash.get(_CONTROL_PLANE)
    if cp is None:
        return None

    async def control_plane_store() -> None:
        await asyncio.to_thread(cp.store.ping)

    return {"control_plane_store": control_plane_store}
