"""Tollway provider adapter for the Anthropic Messages API."""

from __future__ import annotations

from collections.abc import Callable

from tollway import hookimpl
from tollway.provider import Provider
from tollway_provider_anthropic._adapter import AnthropicProvider, claude_sampling, messages_usage

__all__ = ["AnthropicProvider", "claude_sampling", "messages_usage", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(AnthropicProvider)
