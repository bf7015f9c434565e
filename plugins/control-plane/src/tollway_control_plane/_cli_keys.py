"""``tollway virtual-keys`` (alias ``vk``): create, list, show, update, rotate, revoke, disable,
enable and delete virtual keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from tollway_control_plane._cli_common import (
    _call,
    _deleted,
    _details,
    _id_commands,
    _json_arg,
    _json_option,
    _list_command,
    _show,
    _table,
    _updated,
)


def _secret_banner(data: dict[str, Any], verb: str) -> None:
    click.echo(f"{verb} virtual key {data['id']} ({data['name']})")
    click.echo("")
    click.echo(f"  {data['secret']}")
    click.echo("")
    click.echo(
        f"Store this secret now: it is shown only once. Display prefix: {data['display_prefix']}",
    )


_KEY_ORDER = (
    "id",
    "name",
    "display_prefix",
    "status",
    "scope",
    "env",
    "routing_policy_id",
    "expires_at",
    "principal_id",
    "revision",
    "config",
)


@click.group("virtual-keys")
def virtual_keys() -> None:
    """Create and manage virtual keys (the keys clients send to the gateway)."""


@virtual_keys.command("create")
@click.option("--name", required=True, help="A name for humans.")
@click.option(
    "--scope",
    default=None,
    metavar="organization|team|project[:ID]",
    help="Where the key lives; the part after : is an id, a name, a slug or default (no "
    "id: the default one; e.g. ORG:acme, team:backend). Default: organization.",
)
@click.option("--env", type=click.Choice(["live", "test"]), default="live", show_default=True)
@click.option(
    "--config-json", default=None, metavar="JSON", help="The key's config (@file, - for stdin)."
)
@click.option("--routing-policy", default=None, metavar="ID", help="Pin the provider order.")
@click.option("--expires-at", default=None, metavar="ISO", help="e.g. 2027-01-01T00:00:00Z")
@click.option("--principal-id", default=None, help="The key's owner (for principal budgets).")
@_json_option
def vk_create(
    name: str,
    scope: str | None,
    env: str,
    config_json: str | None,
    routing_policy: str | None,
    expires_at: str | None,
    principal_id: str | None,
    as_json: bool,
) -> None:
    """Create a key; its secret is printed once."""
    body: dict[str, Any] = {"name": name, "env": env}
    if scope is not None:
        body["scope"] = scope
    if config_json is not None:
        body["config"] = _json_arg(config_json, "--config-json")
    if routing_policy:
        body["routing_policy_id"] = routing_policy
    if expires_at:
        body["expires_at"] = expires_at
    if principal_id:
        body["principal_id"] = principal_id
    _show(_call("keys.create", body=body), as_json, lambda data: _secret_banner(data, "created"))


def _key_rows(data: list[dict[str, Any]]) -> None:
    _table(
        [
            (
                k["id"],
                k["name"],
                k["display_prefix"],
                k["status"],
                k["scope"],
                k["routing_policy_id"],
                k["expires_at"],
                k["created_at"][:19] + "Z",
            )
            for k in data
        ],
        ("ID", "NAME", "PREFIX", "STATUS", "SCOPE", "POLICY", "EXPIRES", "CREATED"),
    )


_list_command(
    virtual_keys,
    "keys.list",
    "List keys (never their secrets).",
    _key_rows,
    empty="no virtual keys yet: tollway virtual-keys create --name NAME",
)
_id_commands(
    virtual_keys,
    "key_id",
    ("keys.get", "Show one key (not its secret).", lambda data, _: _details(data, _KEY_ORDER)),
)


@virtual_keys.command("update")
@click.argument("key_id", metavar="ID")
@click.option(
    "--config-json",
    default=None,
    metavar="JSON",
    help="Merged into the key's config; null clears a field (@file, - for stdin).",
)
@click.option("--name", default=None)
@click.option("--routing-policy", default=None, metavar="ID|none")
@click.option("--expires-at", default=None, metavar="ISO|never")
@click.option("--principal-id", default=None, metavar="ID|none")
@_json_option
def vk_update(
    key_id: str,
    config_json: str | None,
    name: str | None,
    routing_policy: str | None,
    expires_at: str | None,
    principal_id: str | None,
    as_json: bool,
) -> None:
    """Change a key's config (merged), name, routing policy, expiry or owner."""
    body: dict[str, Any] = {}
    if config_json is not None:
        body["config"] = _json_arg(config_json, "--config-json")
    if name is not None:
        body["name"] = name
    if routing_policy is not None:
        body["routing_policy_id"] = (
            None if routing_policy.lower() in ("", "none") else routing_policy
        )
    if expires_at is not None:
        body["expires_at"] = None if expires_at.lower() in ("", "never", "none") else expires_at
    if principal_id is not None:
        body["principal_id"] = None if principal_id.lower() in ("", "none") else principal_id
    if not body:
        raise click.UsageError(
            "nothing to change: give --config-json, --name, --routing-policy, --expires-at or "
            "--principal-id"
        )
    _show(_call("keys.update", key_id, body), as_json, lambda data: _updated(data, _KEY_ORDER))


def _rotated(data: dict[str, Any], key_id: str) -> None:
    _secret_banner(data, "rotated")
    click.echo(f"The previous secret keeps working until {data['previous_valid_until']}.")


def _status_line(verb: str) -> Callable[[dict[str, Any], str], None]:
    def human(data: dict[str, Any], key_id: str) -> None:
        click.echo(f"{verb} {data['id']} ({data['name']}): status {data['status']}")

    return human


_id_commands(
    virtual_keys,
    "key_id",
    (
        "keys.rotate",
        "Give a key a new secret (printed once); the old one keeps working for 24 h.",
        _rotated,
    ),
    ("keys.revoke", "Revoke a key, at once and for good.", _status_line("revoked")),
    ("keys.disable", "Refuse a key until it is enabled again.", _status_line("disabled")),
    ("keys.enable", "Let a disabled key work again.", _status_line("enabled")),
    ("keys.delete", "Delete a key (its secret stops working at once).", _deleted),
)
