"""Console page: the overview — today's requests, errors, gateway-overhead p50/p95, spend today
and this month per project, top keys and models, requests per hour (an SVG chart)."""

from __future__ import annotations

import asyncio

from quart import Response, g

from tollway_control_plane.auth import Principal
from tollway_control_plane.console._web import blueprint, projects, render
from tollway_control_plane.console.charts import hourly_bars
from tollway_control_plane.console.queries import Overview
from tollway_control_plane.console.queries import overview as overview_query
from tollway_control_plane.protocol import state
from tollway_control_plane.store import format_usd
from tollway_control_plane.traces import span_store

__all__: list[str] = []


@blueprint.get("/")
async def overview() -> Response:
    principal: Principal = g.principal
    spans = span_store(state())

    def load() -> Overview:
        principal.require("requests.list")
        return overview_query(spans, projects(principal))

    stats = await asyncio.to_thread(load)
    return await render(
        "overview.html", o=stats, chart=hourly_bars(stats["hourly"]), usd=format_usd
    )
