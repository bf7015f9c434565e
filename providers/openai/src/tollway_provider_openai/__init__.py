"""Tollway provider adapter for OpenAI and OpenAI-compatible upstreams."""

from __future__ import annotations

from collections.abc import Callable

from tollway import hookimpl
from tollway.provider import Provider
from tollway_provider_openai._adapter import CustomOpenAIProvider, OpenAIProvider

__all__ = ["CustomOpenAIProvider", "OpenAIProvider", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(OpenAIProvider)
    register(CustomOpenAIProvider)
