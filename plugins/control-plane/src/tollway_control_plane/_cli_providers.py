"""``tollway model-providers`` (provider credentials) and ``tollway routing-policies`` (ordered
provider chains that keys can point at).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from tollway.routing import STRATEGIES
from tollway_control_plane._cli_common import (
    _call,
    _changes,
    _deleted,
    _details,
    _id_commands,
    _json_arg,
    _json_option,
    _limit,
    _list_command,
    _show,
    _table,
    _updated,
)

_PROVIDER_TYPES = ("openai", "anthropic", "azure", "bedrock", "vertex", "gemini", "custom")


# --- model-providers --------------------------------------------------------------------------


def _provider_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--api-key",
            default=None,
            metavar="KEY|-",
            help="The provider credential (encrypted at rest; - reads it from stdin).",
        ),
        click.option("--base-url", default=None, metavar="URL"),
        click.option(
            "--config-json",
            default=None,
            metavar="JSON",
            help="Provider config (region, deployment map, …).",
        ),
        click.option("--rpm", type=click.IntRange(min=0), default=None, help="0: no limit."),
        click.option("--tpm", type=click.IntRange(min=0), default=None, help="0: no limit."),
        click.option("--rpd", type=click.IntRange(min=0), default=None, help="0: no limit."),
        click.option("--priority", type=int, default=None, help="Fallback priority (lower first)."),
        click.option(
            "--models", default=None, metavar="a,b*", help="Models it serves (trailing-* globs)."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _provider_body(
    *,
    api_key: str | None,
    base_url: str | None,
    config_json: str | None,
    rpm: int | None,
    tpm: int | None,
    rpd: int | None,
    priority: int | None,
    models: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if api_key is not None:
        body["api_key"] = sys.stdin.readline().strip() if api_key == "-" else api_key
    if base_url is not None:
        body["base_url"] = base_url or None
    if config_json is not None:
        body["config"] = _json_arg(config_json, "--config-json")
    for name, value in (("rpm", rpm), ("tpm", tpm), ("rpd", rpd)):
        if value is not None:
            body[name] = _limit(value)
    if priority is not None:
        body["priority"] = priority
    if models is not None:
        body["models"] = [m.strip() for m in models.split(",") if m.strip()] or None
    return body


def _provider_rows(data: list[dict[str, Any]]) -> None:
    def limits(p: dict[str, Any]) -> str:
        parts = [f"{n}={p[n]}" for n in ("rpm", "tpm", "rpd") if p.get(n)]
        return " ".join(parts)

    _table(
        [
            (
                p["id"],
                p["name"],
                p["type"],
                "config file (read-only)" if p.get("source") == "config" else p["scope"],
                p["priority"],
                p["api_key"],
                p["base_url"],
                ",".join(p["models"] or []),
                limits(p),
            )
            for p in data
        ],
        ("ID", "NAME", "TYPE", "SCOPE", "PRIORITY", "API KEY", "BASE URL", "MODELS", "LIMITS"),
    )


def _provider_created(data: dict[str, Any]) -> None:
    click.echo(f"created model provider {data['id']} ({data['name']}, {data['type']})")
    _details(data)


@click.group("model-providers")
def model_providers() -> None:
    """Provider credentials (OpenAI, Anthropic, Azure, Bedrock, Vertex, Gemini, custom)."""


@model_providers.command("create")
@click.option("--type", "ptype", type=click.Choice(_PROVIDER_TYPES), required=True)
@click.option("--name", required=True)
@click.option(
    "--scope",
    default=None,
    metavar="organization|team|project[:ID]",
    help="Who inherits it; the part after : is an id, a name, a slug or default (no id: "
    "the default one). Default: organization.",
)
@_provider_options
@_json_option
def mp_create(ptype: str, name: str, scope: str | None, as_json: bool, **provider: Any) -> None:
    """Add a provider credential; keys in its scope inherit it."""
    body = {"type": ptype, "name": name}
    body.update(_provider_body(**provider))
    if scope is not None:
        body["scope"] = scope
    _show(_call("providers.create", body=body), as_json, _provider_created)


_list_command(
    model_providers,
    "providers.list",
    "List providers (credentials masked), by fallback priority.",
    _provider_rows,
    empty="no model providers yet: tollway model-providers create --type … --name …",
)
_id_commands(
    model_providers,
    "provider_id",
    ("providers.get", "Show one provider (credential masked).", lambda data, _: _details(data)),
)


@model_providers.command("update")
@click.argument("provider_id", metavar="ID")
@click.option("--name", default=None)
@_provider_options
@_json_option
def mp_update(provider_id: str, name: str | None, as_json: bool, **provider: Any) -> None:
    """Change a provider (config merged; --rpm 0 removes a limit)."""
    body = _provider_body(**provider)
    if name is not None:
        body["name"] = name
    if not body:
        raise click.UsageError("nothing to change: give at least one option (see --help)")
    _show(_call("providers.update", provider_id, body), as_json, _updated)


_id_commands(
    model_providers,
    "provider_id",
    ("providers.delete", "Delete a provider (refused while a routing policy lists it).", _deleted),
)


# --- routing-policies -------------------------------------------------------------------------


def _policy_line(p: dict[str, Any]) -> str:
    weighted = p.get("strategy") == "weighted"
    parts = []
    for e in p["entries"]:
        text = f"{e['provider_id']}:{e['model']}" if e["model"] else e["provider_id"]
        parts.append(f"{text}:{e.get('weight', 1)}" if weighted else text)
    return ",".join(parts)


_PROVIDERS_HELP = (
    "Provider ids (mp_…) or config-file provider names, in fallback order. ':model' pins the "
    "model to ask that provider for; ':N' is its weight under --strategy weighted (0: fallback "
    "only), e.g. mp_a:3,mp_b:1 or mp_a:claude-sonnet-4-5:3. Weights imply --strategy weighted."
)
_STRATEGY_HELP = (
    "How each request walks the providers: ordered (fixed order), weighted (by the weights), "
    "least-latency (fastest time to first byte first), least-busy (fewest in flight first). "
    "Every strategy falls back to the rest on failure."
)


def _policy_created(data: dict[str, Any]) -> None:
    suffix = " (the organization's default)" if data["is_default"] else ""
    click.echo(f"created routing policy {data['id']} ({data['name']}){suffix}")
    click.echo(f"strategy: {data.get('strategy', 'ordered')}")
    click.echo(f"providers: {_policy_line(data)}")


@click.group("routing-policies")
def routing_policies() -> None:
    """Provider chains that keys can point at, and how requests spread over them."""


@routing_policies.command("create")
@click.option("--name", required=True)
@click.option("--providers", required=True, metavar="ID[:model][:N][,…]", help=_PROVIDERS_HELP)
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None, help=_STRATEGY_HELP)
@click.option("--default", "is_default", is_flag=True, help="The organization's default order.")
@_json_option
def rp_create(
    name: str, providers: str, strategy: str | None, is_default: bool, as_json: bool
) -> None:
    """Create a routing policy."""
    body: dict[str, Any] = {"name": name, "providers": providers, "is_default": is_default}
    if strategy is not None:
        body["strategy"] = strategy
    _show(_call("policies.create", body=body), as_json, _policy_created)


_list_command(
    routing_policies,
    "policies.list",
    "List routing policies.",
    lambda data: _table(
        [
            (p["id"], p["name"], p["is_default"], p.get("strategy", "ordered"), _policy_line(p))
            for p in data
        ],
        ("ID", "NAME", "DEFAULT", "STRATEGY", "PROVIDERS"),
    ),
    empty="no routing policies yet: tollway routing-policies create --name … --providers …",
)
_id_commands(
    routing_policies,
    "policy_id",
    (
        "policies.get",
        "Show one routing policy.",
        lambda data, _: _details({**data, "entries": _policy_line(data)}),
    ),
)


@routing_policies.command("update")
@click.argument("policy_id", metavar="ID")
@click.option("--name", default=None)
@click.option("--providers", default=None, metavar="ID[:model][:N][,…]", help=_PROVIDERS_HELP)
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None, help=_STRATEGY_HELP)
@click.option("--default/--no-default", "is_default", default=None)
@_json_option
def rp_update(
    policy_id: str,
    name: str | None,
    providers: str | None,
    strategy: str | None,
    is_default: bool | None,
    as_json: bool,
) -> None:
    """Change a routing policy's name, providers, strategy or default flag."""
    body = _changes(
        "--name, --providers, --strategy or --default",
        name=name,
        providers=providers,
        strategy=strategy,
        is_default=is_default,
    )
    _show(
        _call("policies.update", policy_id, body),
        as_json,
        lambda data: click.echo(
            f"updated {data['id']} ({data.get('strategy', 'ordered')}): {_policy_line(data)}"
        ),
    )


_id_commands(
    routing_policies,
    "policy_id",
    ("policies.delete", "Delete a routing policy (refused while keys point at it).", _deleted),
)
