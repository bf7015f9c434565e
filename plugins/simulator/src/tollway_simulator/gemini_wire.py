"""The Google Gemini API (generativelanguage) wire."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tollway_simulator.server import Simulator


def add_routes(sim: Simulator, router: web.UrlDispatcher) -> None:
    """Add this wire's routes to the simulator's router."""
