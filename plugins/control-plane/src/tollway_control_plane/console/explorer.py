"""Console pages: the request explorer — a search bar that takes a ``grq_…`` request id or a
trace id, filters (key, model, status, time), and one request's page (attempts timeline,
latency split, tokens, cost, cache, guardrail, rate-limit and budget decisions)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from quart import Response, g, redirect, request, url_for

from tollway_control_plane.auth import Principal
from tollway_control_plane.console._web import blueprint, projects, render
from tollway_control_plane.console.charts import latency_split
from tollway_control_plane.console.queries import request_for_trace
from tollway_control_plane.protocol import state
from tollway_control_plane.store import NotFound, ValidationError
from tollway_control_plane.traces import get_request, list_requests, span_store

__all__: list[str] = []

_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
#: The filters the page offers (the ``list_requests`` names).
_FILTERS = ("key", "model", "status", "since")
_SINCE_CHOICES = ("15m", "1h", "6h", "24h", "7d")


async def _as_principal(operation: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs, projects=…)`` in a worker thread, if the signed-in principal may
    run ``operation``; ``projects``: the ones whose requests it may see (``None``: all)."""
    principal: Principal = g.principal

    def run() -> Any:
        principal.require(operation)
        return fn(*args, **kwargs, projects=projects(principal))

    return await asyncio.to_thread(run)


@blueprint.get("/requests")
async def requests() -> Response:
    q = request.args.get("q", "").strip()
    spans = span_store(state())
    search_error = None
    if q:
        if q.startswith("grq_"):
            try:
                await _as_principal("requests.get", get_request, spans, q)
            except NotFound as exc:
                search_error = exc.message  # stay here, the search bar at hand
            else:
                return redirect(url_for("tollway_console.request_page", request_id=q), 303)  # type: ignore[return-value]
        elif _TRACE_ID.match(q):
            found = await _as_principal("requests.get", request_for_trace, spans, q.lower())
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
    record: dict[str, Any] = await _as_principal("requests.get", get_request, spans, request_id)
    return await render("request.html", r=record, split=latency_split(record))
