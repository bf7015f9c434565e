"""The plumbing of the control plane's ``tollway`` commands (see :mod:`tollway_control_plane.cli`):
the state a command works on, the backend it talks to (the local store or a remote control
plane), :func:`_call`, the output helpers (tables, details, ``--json``) and the factories that
add ``list`` and ``VERB ID`` commands to a group.
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
