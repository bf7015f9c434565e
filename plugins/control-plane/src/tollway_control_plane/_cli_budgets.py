"""``tollway gateway-budgets``: spend limits with their spend so far."""

from __future__ import annotations

from typing import Any

import click

from tollway_control_plane._cli_common import (
    _call,
    _changes,
    _deleted,
    _details,
    _id_commands,
    _json_option,
    _list_command,
    _show,
    _table,
)

_NO_LEDGER = (
    "spend accounting not installed: no spend is recorded yet, so SPENT shows 0 "
    "(install the budgets plugin)"
)


_USAGE_HEADERS = ("REQUESTS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "REASONING")
_USAGE_KEYS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)


def _usage_cells(usage: dict[str, Any]) -> list[str]:
    """The window's requests and token sums, with thousands separators."""
    return [f"{int(usage.get(k) or 0):,}" for k in _USAGE_KEYS]


@click.group("gateway-budgets")
def gateway_budgets() -> None:
    """Spend limits per organization, team, project, key, principal or end user."""


def _budget_rows(data: list[dict[str, Any]]) -> None:
    _table(
        [
            (
                b["id"],
                b["scope"],
                b["window"],
                f"${b['limit_usd']}",
                f"${b['spend_usd']}"
                + (f" ({b['spend_end_user']})" if b.get("spend_end_user") else ""),
                *_usage_cells(b.get("usage") or {}),
                b["on_breach"],
                b["name"],
            )
            for b in data
        ],
        ("ID", "SCOPE", "WINDOW", "LIMIT", "SPENT", *_USAGE_HEADERS, "ON BREACH", "NAME"),
    )
    if data and not data[0]["spend_accounting"]:
        click.echo(_NO_LEDGER)


@gateway_budgets.command("create")
@click.option(
    "--scope",
    required=True,
    metavar="SCOPE[:ID]",
    help="organization|team|project[:ID], virtual_key:ID, principal:ID or end_user:ID "
    "(end_user:* caps each end user separately).",
)
@click.option(
    "--organization",
    "organization_id",
    default=None,
    metavar="ORG_ID",
    help="The organization of a principal or end_user budget (default: the default one).",
)
@click.option(
    "--window",
    type=click.Choice(["hour", "day", "week", "month", "total"]),
    default="month",
    show_default=True,
)
@click.option("--limit", "limit_usd", required=True, metavar="USD", help="e.g. 100 or 12.50")
@click.option(
    "--on-breach", type=click.Choice(["block", "warn"]), default="block", show_default=True
)
@click.option("--name", default=None)
@_json_option
def budget_create(
    scope: str,
    organization_id: str | None,
    window: str,
    limit_usd: str,
    on_breach: str,
    name: str | None,
    as_json: bool,
) -> None:
    """Create a budget."""
    body = {"scope": scope, "window": window, "limit_usd": limit_usd, "on_breach": on_breach}
    if name:
        body["name"] = name
    if organization_id:
        body["organization_id"] = organization_id
    _show(
        _call("budgets.create", body=body),
        as_json,
        lambda data: click.echo(
            f"created budget {data['id']}: {data['scope']} ${data['limit_usd']} per "
            f"{data['window']} ({data['on_breach']})"
        ),
    )


def _budget_details(data: dict[str, Any], budget_id: str) -> None:
    _details(data)
    if not data["spend_accounting"]:
        click.echo(_NO_LEDGER)


_list_command(
    gateway_budgets,
    "budgets.list",
    "List budgets with their spend so far.",
    _budget_rows,
    empty="no budgets yet: tollway gateway-budgets create --scope … --limit USD",
)
_id_commands(
    gateway_budgets,
    "budget_id",
    ("budgets.get", "Show one budget with its spend so far.", _budget_details),
)


@gateway_budgets.command("update")
@click.argument("budget_id", metavar="ID")
@click.option("--limit", "limit_usd", default=None, metavar="USD")
@click.option("--on-breach", type=click.Choice(["block", "warn"]), default=None)
@click.option("--name", default=None)
@_json_option
def budget_update(
    budget_id: str, limit_usd: str | None, on_breach: str | None, name: str | None, as_json: bool
) -> None:
    """Change a budget's limit, breach action or name."""
    body = _changes(
        "--limit, --on-breach or --name", limit_usd=limit_usd, on_breach=on_breach, name=name
    )
    if name is not None:
        body["name"] = name or None  # an empty name clears it
    _show(
        _call("budgets.update", budget_id, body),
        as_json,
        lambda data: click.echo(f"updated {data['id']}: ${data['limit_usd']} per {data['window']}"),
    )


_id_commands(
    gateway_budgets,
    "budget_id",
    (
        "budgets.reset",
        "Count a budget's spend afresh from now.",
        lambda data, _: click.echo(f"reset {data['id']}: spend counted from {data['reset_at']}"),
    ),
    ("budgets.delete", "Delete a budget.", _deleted),
)
