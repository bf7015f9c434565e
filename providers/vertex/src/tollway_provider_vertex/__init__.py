"""Tollway provider adapter for Google Vertex AI (``type = "vertex"``): Gemini models through
``generateContent`` and Anthropic models through ``rawPredict``, with service-account auth."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tollway import hookimpl
from tollway.provider import Provider
from tollway_provider_vertex._adapter import ServiceAccountRefused, VertexProvider

if TYPE_CHECKING:
    from tollway_provider_vertex._tokens import TokenSource

__all__ = ["ServiceAccountRefused", "TokenSource", "VertexProvider", "register_providers"]


def __getattr__(name: str) -> Any:
    # TokenSource needs google-auth and requests: imported on first use, not at plugin load.
    if name == "TokenSource":
        from tollway_provider_vertex._tokens import TokenSource

        return TokenSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(VertexProvider)
