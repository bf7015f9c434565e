"""``tollway scopes``: organizations, teams and projects (``add_commands`` adds the ingest-token
commands of :mod:`tollway_control_plane.cli_requests` to this group).
"""

from __future__ import annotations

from typing import Any

import click

from tollway_control_plane._cli_common import _call, _json_option, _list_command, _show, _table


@click.group("scopes")
def scopes() -> None:
    """Organizations, teams and projects (keys, providers and budgets live in one)."""


def _scope_rows(data: dict[str, Any]) -> None:
    rows = [("organization", o["id"], o["name"], "-") for o in data["organizations"]]
    rows += [("team", t["id"], t["name"], t["organization_id"]) for t in data["teams"]]
    rows += [("project", p["id"], p["name"], p["team_id"]) for p in data["projects"]]
    _table(rows, ("TYPE", "ID", "NAME", "PARENT"))


_list_command(scopes, "scopes.list", "List organizations, teams and projects.", _scope_rows)


@scopes.command("create")
@click.option(
    "--type", "kind", type=click.Choice(["organization", "team", "project"]), required=True
)
@click.option("--name", required=True)
@click.option(
    "--parent",
    default=None,
    metavar="ID|NAME",
    help="A team's organization or a project's team: id, name or slug (default: the default one).",
)
@_json_option
def scopes_create(kind: str, name: str, parent: str | None, as_json: bool) -> None:
    """Create an organization, a team or a project."""
    body: dict[str, Any] = {"type": kind, "name": name}
    if parent:
        body["parent_id"] = parent
    _show(
        _call("scopes.create", body=body),
        as_json,
        lambda data: click.echo(f"created {kind} {data['id']} ({data['name']})"),
    )
