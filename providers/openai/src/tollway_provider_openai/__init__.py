"""Tollway provider adapter for OpenAI and OpenAI-compatible upstreams."""

from __future__ import annotations

from collections.abc import Callable

from tollway import hookimpl
from tollway.provider import Provider
from tollway_provider_openai._adapter import (
    CustomOpenAIProvider,
    OpenAIProvider,
    is_reasoning_model,
)

__all__ = ["CustomOpenAIProvider", "OpenAIProvider", "is_reasoning_model", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(OpenAIProvider)
    register(CustomOpenAIProvider)
