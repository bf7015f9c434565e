"""``tollway requests``: the request explorer — look a gateway request up by the
``X-LangWatch-Request-Id`` (``grq_…``) its client got, list recent ones, follow new ones.

Like the other control-plane commands it reads the store in ``TOLLWAY_DATA_DIR`` (or
``TOLLWAY_DATABASE_URL``), or — with ``TOLLWAY_ADMIN_URL`` and ``TOLLWAY_ADMIN_TOKEN`` — a
remote control plane through ``/api/admin/requests``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import quote

import click
import orjson

__all__ = ["requests_group"]


class _Backend(Protocol):
    def get(self, request_id: str) -> dict[str, Any]: ...
    def list(self, filters: dict[str, Any]) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


class _Local:
    def __init__(self, read_only: bool = True) -> None:
        from tollway_control_plane.cli import _state, open_local_store
        from tollway_control_plane.traces import SpanStore

        self.store = open_local_store(_state(), read_only)
        try:
            self.spans = SpanStore.from_env(self.store.db)
        except ValueError as exc:
            self.store.close()
            raise click.ClickException(str(exc)) from None

    def get(self, request_id: str) -> dict[str, Any]:
        from tollway_control_plane.traces import get_request

        return get_request(self.spans, request_id)

    def list(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        from tollway_control_plane.traces import list_requests

        return list_requests(self.spans, filters)

    def close(self) -> None:
        self.store.close()


class _Remote:
    """``/api/admin/requests`` through the CLI's remote client (same errors as every command)."""

    def __init__(self, url: str, token: str) -> None:
        from tollway_control_plane.client import RemoteService

        self._service = RemoteService(url, token)

    def _call(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._service.request("GET", path, params=params)

    def get(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(f"/requests/{quote(request_id, safe='')}")
        return result

    def list(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("/requests", filters)["data"]
        return result

    def close(self) -> None:
        self._service.close()


@contextmanager
def _backend() -> Iterator[_Backend]:
    from tollway_control_plane.cli import _remote_target, _state
    from tollway_control_plane.store import StoreError, ValidationError

    remote = _remote_target(_state())
    backend: _Backend = _Local() if remote is None else _Remote(*remote)
    try:
        yield backend
    except ValidationError as exc:
        raise click.ClickException("refused: " + "; ".join(exc.problems)) from None
    except StoreError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        backend.close()


# --- output -------------------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f} ms"


def _usd(value: Any) -> str:
    return "-" if value is None else f"${float(value):.6f}"


def _show(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _status(r: dict[str, Any]) -> str:
    text = f"{_show(r.get('status_code'))} {r.get('outcome', '')}"
    if r.get("error_type"):
        text += f" ({r['error_type']})"
    return text


def _stream(r: dict[str, Any]) -> str:
    if not r.get("stream"):
        return "no"
    text = f"yes, {_show(r.get('stream_chunks'))} chunks"
    if r.get("stream_terminated_at_chunk") is not None:
        text += f", cut at chunk {r['stream_terminated_at_chunk']}"
    return text


def _print_record(r: dict[str, Any]) -> None:
    tokens = r.get("tokens") or {}
    key = _show(r.get("virtual_key_id"))
    if r.get("virtual_key_display_prefix"):
        key += f" ({r['virtual_key_display_prefix']}…)"
    served = r.get("served_model")
    model = _show(r.get("model")) + (f" → served {served}" if served else "")
    lines = [
        ("request", r.get("request_id")),
        ("time", f"{r.get('started_at')}  {r.get('endpoint') or ''}".rstrip()),
        ("status", _status(r)),
        ("model", model),
        ("provider", f"{_show(r.get('provider_type'))} / {_show(r.get('provider'))}"),
        ("key", key),
        ("project", _show(r.get("project_id"))),
        (
            "latency",
            f"total {_ms(r.get('duration_ms'))}, upstream {_ms(r.get('upstream_ms'))}, "
            f"gateway overhead {_ms(r.get('gateway_overhead_ms'))}"
            + (f", first chunk {_ms(r['first_chunk_ms'])}" if r.get("first_chunk_ms") else ""),
        ),
        (
            "tokens",
            f"input {_show(tokens.get('input'))}, output {_show(tokens.get('output'))}, "
            f"cache read {_show(tokens.get('cache_read'))}, "
            f"cache write {_show(tokens.get('cache_write'))}, "
            f"reasoning {_show(tokens.get('reasoning'))}",
        ),
        ("cost", _usd(r.get("cost_usd"))),
        ("cache", _show(r.get("cache"))),
        ("stream", _stream(r)),
        ("trace", f"{r.get('trace_id')} span {r.get('span_id')}"),
    ]
    decisions = dict(r.get("decisions") or {})
    verdicts = decisions.pop("guardrails", None) or []
    decisions.pop("guardrail", None)  # its details: --json
    for kind, values in decisions.items():
        lines.append((kind, ", ".join(f"{k}={v}" for k, v in sorted(values.items()))))
    for v in verdicts:
        text = f"{v.get('direction')} {v.get('evaluator')}: {v.get('verdict')}"
        if v.get("reason"):
            text += f" ({v['reason']})"
        lines.append(("guardrail", text))
    for label, value in lines:
        click.echo(f"{label:<9} {value}")
    attempts = r.get("attempts") or []
    click.echo(f"attempts  {len(attempts)}")
    for a in attempts:
        credential = _show(a.get("credential_name"))
        if a.get("credential_id") and a.get("credential_id") != a.get("credential_name"):
            credential += f" ({a['credential_id']})"
        line = (
            f"  #{_show(a.get('index'))} {_show(a.get('outcome'))}  {credential}  "
            f"{_show(a.get('provider_type'))} {_show(a.get('model'))}  "
            f"status {_show(a.get('status_code'))}  {_ms(a.get('duration_ms'))}"
        )
        if a.get("fallback_reason"):
            line += f"  reason {a['fallback_reason']}"
        click.echo(line)


_LIST_HEADERS = ("REQUEST", "STARTED", "STATUS", "MODEL", "KEY", "MS", "TOKENS", "COST", "CACHE")


def _list_row(r: dict[str, Any]) -> list[str]:
    tokens = r.get("tokens") or {}
    return [
        _show(r.get("request_id")),
        _show(r.get("started_at")),
        _status(r),
        _show(r.get("model")),
        _show(r.get("virtual_key_id")),
        f"{float(r.get('duration_ms') or 0):.0f}",
        f"{_show(tokens.get('input'))}/{_show(tokens.get('output'))}",
        _usd(r.get("cost_usd")),
        _show(r.get("cache")),
    ]


def _table(rows: list[list[str]]) -> None:
    widths = [len(h) for h in _LIST_HEADERS]
    for row in rows:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    for row in [list(_LIST_HEADERS), *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


# --- commands -----------------------------------------------------------------------------------

_FILTER_OPTIONS = [
    click.option("--key", help="Only this virtual key (vk_…)."),
    click.option("--project", help="Only this project id."),
    click.option("--model", help="Only this model (as the client asked for it)."),
    click.option(
        "--status",
        help="ok, error, an HTTP status (429) or an error type (rate_limit_exceeded).",
    ),
]


def _filters(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v not in (None, "")}


@click.group("requests")
def requests_group() -> None:
    """Look up gateway requests by their X-LangWatch-Request-Id (grq_…): attempts, latency,
    tokens, cost, cache, status. Spans are kept TOLLWAY_TRACE_RETENTION_DAYS (default 7)."""


@requests_group.command("get")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def requests_get(request_id: str, as_json: bool) -> None:
    """Show one request: REQUEST_ID is the X-LangWatch-Request-Id response header (grq_…)."""
    with _backend() as backend:
        record = backend.get(request_id)
    if as_json:
        _print_json(record)
    else:
        _print_record(record)


def _with_filters(fn: Any) -> Any:
    for option in reversed(_FILTER_OPTIONS):
        fn = option(fn)
    return fn


@requests_group.command("list")
@_with_filters
@click.option("--since", help="Only newer than this: 30m, 1h, 2d, or an ISO-8601 time.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def requests_list(as_json: bool, **options: Any) -> None:
    """List recent requests, newest first."""
    with _backend() as backend:
        records = backend.list(_filters(**options))
    if as_json:
        _print_json(records)
    elif not records:
        click.echo("no requests match", err=True)
    else:
        _table([_list_row(r) for r in records])


@requests_group.command("tail")
@_with_filters
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def requests_tail(as_json: bool, interval: float, **options: Any) -> None:
    """Follow new requests as they are stored (Ctrl-C stops)."""
    from datetime import timedelta

    from tollway_control_plane._util import format_time, now, parse_time

    filters = _filters(**options)
    start = now()
    since = format_time(start)
    seen: set[str] = set()
    if not as_json:
        _table([])
    try:
        with _backend() as backend:
            while True:
                records = backend.list({**filters, "since": since, "limit": 1000})
                for r in reversed(records):
                    if r["request_id"] in seen:
                        continue
                    if as_json:
                        click.echo(orjson.dumps(r).decode())
                    else:
                        click.echo("  ".join(_list_row(r)))
                seen = {r["request_id"] for r in records}
                if records:
                    # A span is stored when its request ends: keep asking 5 minutes back from
                    # the newest start, so a long stream that ends late still shows up.
                    back = parse_time(records[0]["started_at"]) - timedelta(minutes=5)
                    since = format_time(max(start, back))
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


# --- ingest tokens (added to ``tollway scopes``) --------------------------------------------------


def _project_id(store: Any, scope: str) -> str:
    """The project SCOPE names (``project:ID``, its name or slug, ``project:default``)."""
    from tollway_control_plane.store import parse_scope

    kind, ident = parse_scope(scope)
    if kind != "project":
        raise click.BadParameter(
            "give a project scope: project:ID (or its name or slug)", param_hint="SCOPE"
        )
    project_id: str = store.resolve_scope_id("project", ident)
    return project_id


def _emit(as_json: bool, project_id: str, token: str) -> None:
    if as_json:
        _print_json({"project_id": project_id, "ingest_token": token})
    else:
        click.echo(token)


def _local_store() -> Any:
    from tollway_control_plane.cli import _state

    state = _state()
    if state.remote:
        raise click.ClickException(
            "ingest tokens are managed on the control plane's store: run this where "
            "--data-dir / --config (or TOLLWAY_DATABASE_URL) reach it, with TOLLWAY_ADMIN_URL "
            "unset"
        )
    return _Local(read_only=True).store


@click.command("ingest-token")
@click.argument("scope", metavar="SCOPE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ingest_token_command(scope: str, as_json: bool) -> None:
    """Print the OTLP ingest token of SCOPE (project:ID): the X-Auth-Token its gateways send to
    /api/otel/v1/traces (the bundle of a project-scoped key carries it)."""
    from tollway_control_plane.ingest import ingest_token
    from tollway_control_plane.store import StoreError

    store = _local_store()
    try:
        project_id = _project_id(store, scope)
        _emit(as_json, project_id, ingest_token(store, project_id))
    except StoreError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        store.close()


@click.command("rotate-ingest-token")
@click.argument("scope", metavar="SCOPE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def rotate_ingest_token_command(scope: str, as_json: bool) -> None:
    """Replace the OTLP ingest token of SCOPE (project:ID) and print the new one. The old token
    is refused at once; gateways pick the new one up with their next key bundle."""
    from tollway_control_plane.ingest import rotate_ingest_token
    from tollway_control_plane.store import StoreError

    store = _local_store()
    try:
        project_id = _project_id(store, scope)
        _emit(as_json, project_id, rotate_ingest_token(store, project_id))
    except StoreError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        store.close()
