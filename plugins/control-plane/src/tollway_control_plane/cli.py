"""The control plane's ``tollway`` commands (SPEC §8): ``virtual-keys``, ``model-providers``,
``routing-policies``, ``gateway-budgets``, ``scopes``, ``api-tokens`` and ``control-plane``.

They work on the store that ``tollway serve`` would use — resolved by
:func:`tollway.state.cli_state` from ``--config`` / ``--data-dir`` and the environment, see
:mod:`tollway.state` — directly, or (with ``TOLLWAY_ADMIN_URL`` and ``TOLLWAY_ADMIN_TOKEN``) on
a remote control plane through its admin API; each says which on stderr (``using …``). Read-only
commands (``list``, ``get``) never create a store. Either way a change reaches running gateways
through the change feed within about a second.

Tables for humans, ``--json`` for scripts. A key's secret is printed once, by ``create`` and
``rotate``; provider credentials are never printed (only masked).

Layout: the plumbing (state, backends, :func:`~tollway_control_plane._cli_common._call`, output
helpers, command factories) is in ``_cli_common``; each command group in its own module
(``_cli_keys``, ``_cli_providers`` with ``routing-policies``, ``_cli_budgets``, ``_cli_scopes``);
``control-plane``, :func:`describe_cli_state` and :func:`add_commands` are here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from tollway_control_plane._cli_budgets import gateway_budgets
from tollway_control_plane._cli_common import _config_providers, _store_source, _using

# Re-exported: ``cli_requests`` imports these from here.
from tollway_control_plane._cli_common import _remote_target as _remote_target
from tollway_control_plane._cli_common import _state as _state
from tollway_control_plane._cli_common import open_local_store as open_local_store
from tollway_control_plane._cli_keys import virtual_keys
from tollway_control_plane._cli_providers import model_providers, routing_policies
from tollway_control_plane._cli_scopes import scopes
from tollway_control_plane._cli_tokens import api_tokens

if TYPE_CHECKING:
    from tollway.state import StateLocation

__all__ = ["add_commands", "describe_cli_state"]


def describe_cli_state(state: StateLocation) -> dict[str, Any]:
    """The control plane's part of ``tollway status`` (``describe_state`` without a gateway):
    the store this CLI would use, whether it exists and its id; or the remote control plane
    and its store's id. Creates nothing."""
    from tollway_control_plane.runtime import locate_store, store_url
    from tollway_control_plane.store import DatabaseError, StoreError, store_target

    if state.remote:
        url = state.admin_url or ""
        part: dict[str, Any] = {
            "kind": "remote",
            "url": url,
            "id": None,
            "using": f"control plane {url or '(TOLLWAY_ADMIN_URL unset)'} (TOLLWAY_ADMIN_URL)",
        }
        token = os.environ.get("TOLLWAY_ADMIN_TOKEN", "").strip()
        if url and token:
            from tollway_control_plane.client import RemoteService

            remote = RemoteService(url, token, timeout=5)
            try:
                info = remote.call("store.info")
                part["id"] = info.get("id") if isinstance(info, dict) else None
            except StoreError as exc:
                part["error"] = exc.message
            finally:
                remote.close()
        return {"store": part}
    try:
        where = locate_store(state.data_dir)
    except DatabaseError as exc:
        try:
            shown = store_url(store_target(state.data_dir))
        except DatabaseError:
            shown = "TOLLWAY_DATABASE_URL"
        return {
            "store": {
                "kind": "postgresql",
                "url": shown,
                "exists": None,
                "id": None,
                "error": str(exc),
                "using": f"store {shown} ({_store_source(state)}): cannot be read: {exc}",
            }
        }
    using = f"store {where.url} ({_store_source(state)})"
    if not where.exists:
        using += ": no store there yet"
    return {
        "store": {
            "kind": where.kind,
            "url": where.url,
            "exists": where.exists,
            "id": where.id,
            "using": using,
        }
    }


# --- control-plane ----------------------------------------------------------------------------


@click.command("control-plane")
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=5560, show_default=True)
def control_plane(host: str, port: int) -> None:
    """Run the control plane on its own (gateways point at it with LW_GATEWAY_BASE_URL).

    The store is TOLLWAY_DATABASE_URL (PostgreSQL, shared by replicas) or the SQLite file in
    the data dir (--data-dir, TOLLWAY_DATA_DIR, the config file's data_dir); the admin API is
    on with TOLLWAY_ADMIN_TOKEN.
    """
    from tollway.logs import configure_logging
    from tollway.secrets import SecretsError
    from tollway_control_plane.runtime import ControlPlane, store_url
    from tollway_control_plane.server import run
    from tollway_control_plane.store import DatabaseError, store_target

    state = _state()
    configure_logging(state.settings.log.format, state.settings.log.level)
    try:
        shown = store_url(store_target(state.data_dir))
        cp = ControlPlane.open(
            state.data_dir, environment=state.environment, config_providers=_config_providers()
        )
    except (SecretsError, DatabaseError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _using(f"store {shown} ({_store_source(state)}), id {cp.store.store_id}")
    run(cp, host, port)


def add_commands(cli: click.Group) -> None:
    """Add the control plane's commands to the ``tollway`` CLI, each (and each sub-command)
    with ``--config`` / ``--data-dir``; ``vk`` is an alias of ``virtual-keys``."""
    from tollway.state import add_state_options
    from tollway_control_plane.cli_requests import (
        ingest_token_command,
        requests_group,
        rotate_ingest_token_command,
    )

    scopes.add_command(ingest_token_command)
    scopes.add_command(rotate_ingest_token_command)
    for command in (
        virtual_keys,
        model_providers,
        routing_policies,
        gateway_budgets,
        scopes,
        control_plane,
        requests_group,
        api_tokens,
    ):
        cli.add_command(add_state_options(command))
    add_alias = getattr(cli, "add_alias", None)
    if add_alias is not None:
        add_alias("vk", "virtual-keys")
