"""Tollway provider adapter for the Google Gemini API (``type = "gemini"``).

:mod:`tollway_provider_gemini.translate` holds the pure chat ⇄ ``generateContent`` translators
(reused by the Vertex AI adapter).
"""

from __future__ import annotations

from collections.abc import Callable

from tollway import hookimpl
from tollway.provider import Provider
from tollway_provider_gemini._adapter import GeminiProvider, translate_request

__all__ = ["GeminiProvider", "register_providers", "translate_request"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(GeminiProvider)
