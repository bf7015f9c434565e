"""Tollway provider adapter for Amazon Bedrock (Converse / ConverseStream)."""

from __future__ import annotations

from collections.abc import Callable

from tollway import hookimpl
from tollway.provider import Provider
from tollway_provider_bedrock._adapter import BedrockProvider, converse_url

__all__ = ["BedrockProvider", "converse_url", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(BedrockProvider)
