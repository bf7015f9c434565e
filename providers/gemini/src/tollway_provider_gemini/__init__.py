"""Tollway provider adapter for the Google Gemini API (``type = "gemini"``).

The adapter is the core's ``generateContent`` wire (:mod:`tollway.wire.gemini`, translators in
:mod:`tollway.wire.gemini_translate`, shared with the Vertex AI adapter) with the Gemini API's
URLs and key auth; :mod:`tollway_provider_gemini.translate` re-exports the translators.
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
