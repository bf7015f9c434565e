"""``tollway api-tokens``: create, list, show and revoke admin API tokens (permissions at a
scope)."""

from __future__ import annotations

from typing import Any

import click

from tollway_control_plane._cli_common import (
    _call,
    _details,
    _id_commands,
    _json_option,
    _list_command,
    _show,
    _table,
)
from tollway_control_plane.auth import PERMISSIONS, parse_permissions
from tollway_control_plane.store import KEY_SCOPES, ValidationError, parse_scope

_ORDER = (
    "id",
    "name",
    "display_prefix",
    "status",
    "scope",
    "permissions",
    "expires_at",
    "last_used_at",
    "revoked_at",
    "created_by",
    "created_at",
)


@click.group("api-tokens")
def api_tokens() -> None:
    """Admin API tokens: permissions at an organization, team or project scope.

    A token is sent as 'Authorization: Bearer lw_at_…' to the admin API (or set as
    TOLLWAY_ADMIN_TOKEN for this CLI's remote mode); TOLLWAY_ADMIN_TOKEN itself stays the
    bootstrap super-user."""


def _scope_arg(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        kind, ident = parse_scope(value, KEY_SCOPES)
    except ValidationError as exc:
        raise click.BadParameter(exc.message.removeprefix("scope: ")) from None
    if kind != "organization" and not ident:
        raise click.BadParameter(f"a {kind} scope needs its id: {kind}:ID")
    return value


def _permissions_arg(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    try:
        return list(parse_permissions(value))
    except ValidationError as exc:
        raise click.BadParameter(exc.message.removeprefix("permissions: ")) from None


@api_tokens.command("create")
@click.option(
    "--scope",
    required=True,
    callback=_scope_arg,
    metavar="organization|team:ID|project:ID",
    help="Where the token works: that scope and below (an id, a name or a slug after :; "
    "organization alone is the default organization).",
)
@click.option(
    "--permissions",
    required=True,
    callback=_permissions_arg,
    metavar="P[,P…]",
    help=f"Comma-separated, * for all: {', '.join(PERMISSIONS)}.",
)
@click.option("--name", default="API token", show_default=True, help="A name for humans.")
@click.option("--expires-at", default=None, metavar="ISO", help="e.g. 2027-01-01T00:00:00Z")
@_json_option
def tokens_create(
    scope: str, permissions: list[str], name: str, expires_at: str | None, as_json: bool
) -> None:
    """Create a token; its secret is printed once (the store keeps only a hash)."""
    body: dict[str, Any] = {"name": name, "scope": scope, "permissions": permissions}
    if expires_at:
        body["expires_at"] = expires_at

    def human(data: dict[str, Any]) -> None:
        click.echo(f"created API token {data['id']} ({data['name']}) at {data['scope']}")
        click.echo("")
        click.echo(f"  {data['secret']}")
        click.echo("")
        click.echo("Store this secret now: it is shown only once.")
        click.echo(f"Permissions: {', '.join(data['permissions'])}")

    _show(_call("api_tokens.create", body=body), as_json, human)


def _rows(data: list[dict[str, Any]]) -> None:
    _table(
        [
            (
                t["id"],
                t["name"],
                t["display_prefix"],
                t["status"],
                t["scope"],
                ",".join(t["permissions"]),
                t["expires_at"],
                (t["last_used_at"] or "")[:19],
            )
            for t in data
        ],
        ("ID", "NAME", "PREFIX", "STATUS", "SCOPE", "PERMISSIONS", "EXPIRES", "LAST USED"),
    )


_list_command(
    api_tokens,
    "api_tokens.list",
    "List tokens (never their secrets).",
    _rows,
    empty="no API tokens yet: tollway api-tokens create --scope SCOPE --permissions P,P",
)
_id_commands(
    api_tokens,
    "token_id",
    ("api_tokens.get", "Show one token (not its secret).", lambda d, _: _details(d, _ORDER)),
    (
        "api_tokens.revoke",
        "Revoke a token, at once and for good.",
        lambda d, _: click.echo(f"revoked {d['id']} ({d['name']}): status {d['status']}"),
    ),
)
