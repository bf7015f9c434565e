"""The control plane's ``tollway`` commands (SPEC §8): ``virtual-keys``, ``model-providers``,
``routing-policies``, ``gateway-budgets``, ``scopes`` and ``control-plane``.

They work on the store that ``tollway serve`` would use — resolved by
:func:`tollway.state.cli_state` from ``--config`` / ``--data-dir`` and the environment, see
:mod:`tollway.state` — directly, or (with ``TOLLWAY_ADMIN_URL`` and ``TOLLWAY_ADMIN_TOKEN``) on
a remote control plane through its admin API; each says which on stderr (``using …``). Read-only
commands (``list``, ``get``) never create a store. Either way a change reaches running gateways
through the change feed within about a second.

Tables for humans, ``--json`` for scripts. A key's secret is printed once, by ``create`` and
``rotate``; provider credentials are never printed (only masked).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click
import orjson

if TYPE_CHECKING:
    from tollway.state import StateLocation
    from tollway_control_plane.store import Store

__all__ = ["add_commands", "describe_cli_state"]

_PROVIDER_TYPES = ("openai", "anthropic", "azure", "bedrock", "vertex", "gemini", "custom")


class _Backend(Protocol):
    def call(self, name: str, id: str | None = None, body: Any = None) -> Any: ...
    def close(self) -> None: ...


# --- plumbing ---------------------------------------------------------------------------------


def _state() -> StateLocation:
    """The state this command works on, resolved as ``tollway serve`` does (tollway.state)."""
    from tollway.state import cli_state

    return cli_state()


def _using(text: str) -> None:
    """Say which store or control plane the command talks to (one line on stderr)."""
    click.echo(f"using {text}", err=True)


def _store_source(state: StateLocation) -> str:
    if state.database_url:
        return "TOLLWAY_DATABASE_URL"
    return f"data dir from {state.data_dir_from}"


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


def _config_providers() -> list[Any]:
    """The config file's ``[[providers]]`` (the resolved ``--config`` / ``TOLLWAY_CONFIG``),
    listed read-only next to the store's; none when there is no config file."""
    return list(_state().settings.providers)


def _remote_target(state: StateLocation) -> tuple[str, str] | None:
    """``(admin URL, token)`` when this command talks to a remote control plane, else None
    (refused when half-configured or combined with --config/--data-dir)."""
    if not state.remote:
        return None
    url = state.admin_url or ""
    token = os.environ.get("TOLLWAY_ADMIN_TOKEN", "").strip()
    if not (url and token):
        missing = "TOLLWAY_ADMIN_TOKEN" if url else "TOLLWAY_ADMIN_URL"
        raise click.ClickException(
            f"remote mode needs both TOLLWAY_ADMIN_URL and TOLLWAY_ADMIN_TOKEN; {missing} is "
            "not set (unset both to work on the local store in the data dir)"
        )
    if state.explicit:
        raise click.ClickException(
            f"TOLLWAY_ADMIN_URL is set, so this command would talk to the control plane at "
            f"{url}, but --config / --data-dir name a local store; unset TOLLWAY_ADMIN_URL "
            "and TOLLWAY_ADMIN_TOKEN to use the local store, or drop the option"
        )
    _using(f"control plane {url} (TOLLWAY_ADMIN_URL)")
    return url, token


def open_local_store(state: StateLocation, read_only: bool = False) -> Store:
    """The store ``state`` names, as the gateway would open it; a read-only command never
    creates one (it exits 1 naming where it looked)."""
    from tollway.secrets import SecretsError
    from tollway_control_plane.runtime import NoStore, open_store, store_url
    from tollway_control_plane.store import DatabaseError, store_target

    try:
        shown = store_url(store_target(state.data_dir))
        store, _ = open_store(state.data_dir, environment=state.environment, create=not read_only)
    except NoStore as exc:
        raise click.ClickException(
            f"{exc} ({_store_source(state)}); nothing was created there. A gateway keeps its "
            "store in its config file's data_dir (or TOLLWAY_DATA_DIR): give this command the "
            "same --config FILE or --data-dir DIR; `tollway status` shows which store each uses"
        ) from None
    except (SecretsError, DatabaseError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _using(f"store {shown} ({_store_source(state)})")
    return store


def _open_backend(read_only: bool = False) -> _Backend:
    state = _state()
    remote = _remote_target(state)
    if remote is not None:
        from tollway_control_plane.client import RemoteService

        return RemoteService(*remote)
    from tollway_control_plane.service import Service

    return Service(open_local_store(state, read_only), _config_providers())


@contextmanager
def _backend(read_only: bool = False) -> Iterator[_Backend]:
    backend = _open_backend(read_only)
    try:
        yield backend
    finally:
        backend.close()


def _call(name: str, id: str | None = None, body: Any = None) -> Any:
    """Run one operation; store errors become a clean CLI error (exit 1)."""
    from tollway_control_plane.store import StoreError, ValidationError

    read_only = name.endswith((".list", ".get"))
    try:
        with _backend(read_only) as backend:
            return backend.call(name, id, body)
    except ValidationError as exc:
        lines = exc.problems
        if len(lines) == 1:
            raise click.ClickException(f"refused: {lines[0]}") from None
        raise click.ClickException("refused:\n  " + "\n  ".join(lines)) from None
    except StoreError as exc:
        raise click.ClickException(exc.message) from None


def _json_arg(value: str | None, option: str) -> Any:
    """Parse a ``--config-json`` value (``@file`` reads a file, ``-`` stdin)."""
    if value is None:
        return None
    text = value
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc}", param_hint=option) from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=option) from None


def _print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def _details(data: dict[str, Any], order: Sequence[str] = ()) -> None:
    keys = [k for k in order if k in data] + [k for k in data if k not in order]
    width = max(len(k) for k in keys)
    for k in keys:
        click.echo(f"{k.ljust(width)}  {_cell(data[k])}")


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def _show(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print an operation's result: JSON with ``--json``, else ``human(data)``."""
    if as_json:
        _print_json(data)
    else:
        human(data)


def _list_command(
    group: click.Group,
    op: str,
    doc: str,
    rows: Callable[[Any], None],
    empty: str | None = None,
) -> None:
    """Add ``list [--json]`` to ``group``: ``op``'s result as ``rows(data)``, or the ``empty``
    hint when there is nothing yet."""

    def command(as_json: bool) -> None:
        data = _call(op)
        if as_json:
            _print_json(data)
        elif empty is not None and not data:
            click.echo(empty)
        else:
            rows(data)

    group.command(op.split(".")[1], help=doc)(_json_option(command))


def _id_commands(
    group: click.Group, id_name: str, *specs: tuple[str, str, Callable[[Any, str], None]]
) -> None:
    """Add ``VERB ID [--json]`` commands to ``group``, one per ``(op, help, human)``: the verb is
    the op's (``keys.get`` → ``get``); it runs the op on the id and prints ``human(data, id)``.
    ``id_name`` names the argument for click."""
    for op, doc, human in specs:
        _id_command(group, id_name, op, doc, human)


def _id_command(
    group: click.Group, id_name: str, op: str, doc: str, human: Callable[[Any, str], None]
) -> None:
    def command(as_json: bool, **ident: str) -> None:
        (item_id,) = ident.values()
        _show(_call(op, item_id), as_json, lambda data: human(data, item_id))

    with_params = click.argument(id_name, metavar="ID")(_json_option(command))
    group.command(op.split(".")[1], help=doc)(with_params)


def _changes(hint: str, **options: Any) -> dict[str, Any]:
    """An update's body: the options that were given (not None); none given is a usage error
    (``nothing to change: give`` ``hint``)."""
    body = {name: value for name, value in options.items() if value is not None}
    if not body:
        raise click.UsageError(f"nothing to change: give {hint}")
    return body


def _deleted(data: Any, item_id: str) -> None:
    click.echo(f"deleted {item_id}")


def _updated(data: dict[str, Any], order: Sequence[str] = ()) -> None:
    click.echo(f"updated {data['id']} (revision {data['revision']})")
    _details(data, order)


def _limit(value: int | None) -> int | None:
    """``--rpm 0`` means no limit."""
    return None if value in (None, 0) else value


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


# --- virtual-keys -----------------------------------------------------------------------------


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
    return ",".join(
        f"{e['provider_id']}:{e['model']}" if e["model"] else e["provider_id"] for e in p["entries"]
    )


def _policy_created(data: dict[str, Any]) -> None:
    suffix = " (the organization's default)" if data["is_default"] else ""
    click.echo(f"created routing policy {data['id']} ({data['name']}){suffix}")
    click.echo(f"providers: {_policy_line(data)}")


@click.group("routing-policies")
def routing_policies() -> None:
    """Ordered provider chains that keys can point at."""


@routing_policies.command("create")
@click.option("--name", required=True)
@click.option(
    "--providers",
    required=True,
    metavar="ID[,ID[:model]…]",
    help="Provider ids in dispatch order; ':model' pins the model to ask that provider for.",
)
@click.option("--default", "is_default", is_flag=True, help="The organization's default order.")
@_json_option
def rp_create(name: str, providers: str, is_default: bool, as_json: bool) -> None:
    """Create a routing policy."""
    body = {"name": name, "providers": providers, "is_default": is_default}
    _show(_call("policies.create", body=body), as_json, _policy_created)


_list_command(
    routing_policies,
    "policies.list",
    "List routing policies.",
    lambda data: _table(
        [(p["id"], p["name"], p["is_default"], _policy_line(p)) for p in data],
        ("ID", "NAME", "DEFAULT", "PROVIDERS"),
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
@click.option("--providers", default=None, metavar="ID[,ID[:model]…]")
@click.option("--default/--no-default", "is_default", default=None)
@_json_option
def rp_update(
    policy_id: str, name: str | None, providers: str | None, is_default: bool | None, as_json: bool
) -> None:
    """Change a routing policy's name, providers or default flag."""
    body = _changes(
        "--name, --providers or --default", name=name, providers=providers, is_default=is_default
    )
    _show(
        _call("policies.update", policy_id, body),
        as_json,
        lambda data: click.echo(f"updated {data['id']}: {_policy_line(data)}"),
    )


_id_commands(
    routing_policies,
    "policy_id",
    ("policies.delete", "Delete a routing policy (refused while keys point at it).", _deleted),
)


# --- gateway-budgets --------------------------------------------------------------------------

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


# --- scopes -----------------------------------------------------------------------------------


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
    ):
        cli.add_command(add_state_options(command))
    add_alias = getattr(cli, "add_alias", None)
    if add_alias is not None:
        add_alias("vk", "virtual-keys")
