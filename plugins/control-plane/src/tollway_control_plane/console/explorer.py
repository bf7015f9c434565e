"""Console pages: the request explorer — a search bar that takes a ``grq_…`` request id or a
trace id, filters (key, model, status, time), and one request's page (attempts timeline,
latency split, tokens, cost, cache, guardrail, rate-limit and budget decisions)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from quart import Response, g, redirect, request, url_for

from tollway_control_plane.auth import Principal
from tollway_control_plane.console._web import blueprint, project_of, render
from tollway_control_plane.console.charts import latency_split
from tollway_control_plane.console.queries import request_for_trace
from tollway_control_plane.protocol import state
from tollway_control_plane.store import NotFound, ValidationError
from tollway_control_plane.traces import SpanStore, get_request, list_requests, span_store

__all__: list[str] = []

_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
#: The filters the page offers (the ``list_requests`` names).
_FILTERS = ("key", "model", "status", "since")
_SINCE_CHOICES = ("15m", "1h", "6h", "24h", "7d")


async def _as_principal(operation: str, fn: Any, *args: Any) -> Any:
    principal: Principal = g.principal

    def run() -> Any:
        principal.require(operation)
        return fn(*args)

    return await asyncio.to_thread(run)


def _visible(spans: SpanStore, request_id: str, project: str | None) -> dict[str, Any]:
    """The request's record; ``NotFound`` also when it is outside the caller's project."""
    record = get_request(spans, request_id)
    if project is not None and record.get("project_id") != project:
        raise NotFound(f"no request {request_id!r} in project {project}")
    return record


@blueprint.get("/requests")
async def requests() -> Response:
    q = request.args.get("q", "").strip()
    spans = span_store(state())
    search_error = None
    if q:
        if q.startswith("grq_"):
            try:
                await _as_principal("requests.get", _visible, spans, q, project_of(g.principal))
            except NotFound as exc:
                search_error = exc.message  # stay here, the search bar at hand
            else:
                return redirect(url_for("tollway_console.request_page", request_id=q), 303)  # type: ignore[return-value]
        elif _TRACE_ID.match(q):
            found = await _as_principal(
                "requests.get", request_for_trace, spans, q.lower(), project_of(g.principal)
            )
            if found:
                return redirect(url_for("tollway_console.request_page", request_id=found), 303)  # type: ignore[return-value]
            search_error = f"no stored request has trace id {q}"
        else:
            search_error = (
                "search takes a request id (grq_…, the X-LangWatch-Request-Id header) or a "
                "32-hex-digit trace id; use the filters for the rest"
            )
    filters = {f: request.args.get(f, "").strip() for f in _FILTERS}
    query = {k: v for k, v in filters.items() if v}
    project = project_of(g.principal)
    if project is not None:  # a project's token sees its project's requests only
        query["project"] = project
    errors: list[str] = []
    rows: list[dict[str, Any]] = []
    try:
        rows = await _as_principal("requests.list", list_requests, spans, query)
    except ValidationError as exc:
        errors = exc.problems or [exc.message]
    return await render(
        "requests.html",
        422 if errors else (404 if search_error and q else 200),
        rows=rows,
        q=q,
        filters=filters,
        since_choices=_SINCE_CHOICES,
        search_error=search_error,
        errors=errors,
    )


@blueprint.get("/requests/<request_id>")
async def request_page(request_id: str) -> Response:
    spans = span_store(state())
    record: dict[str, Any] = await _as_principal(
        "requests.get", _visible, spans, request_id, project_of(g.principal)
    )
    return await render("request.html", r=record, split=latency_split(record))
