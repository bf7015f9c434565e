"""Tollway provider adapter for Azure OpenAI."""

from __future__ import annotations

from collections.abc import Callable

from tollway import hookimpl
from tollway.provider import Provider
from tollway_provider_azure._adapter import (
    DEFAULT_API_VERSION,
    AzureOpenAIProvider,
    azure_url,
)

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIProvider", "azure_url", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(AzureOpenAIProvider)
