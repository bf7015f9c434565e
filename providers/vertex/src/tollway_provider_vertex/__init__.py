"""Tollway provider adapter for Google Vertex AI (``type = "vertex"``): Gemini models through
``generateContent`` and Anthropic models through ``rawPredict``, with service-account auth."""

from __future__ import annotations

from collections.abc import Callable

from tollway import hookimpl
from tollway.provider import Provider
from tollway_provider_vertex._adapter import ServiceAccountRefused, TokenSource, VertexProvider

__all__ = ["ServiceAccountRefused", "TokenSource", "VertexProvider", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(VertexProvider)
