"""api.anthropic.com: the core's Anthropic Messages wire (:mod:`tollway.wire.anthropic`) with
Anthropic's defaults."""

from __future__ import annotations

from typing import ClassVar

from tollway.wire.anthropic import (
    DEFAULT_VERSION,
    SAMPLING_REMOVED_VERSION,
    AnthropicWireProvider,
    claude_sampling,
    messages_usage,
)

__all__ = [
    "DEFAULT_VERSION",
    "SAMPLING_REMOVED_VERSION",
    "AnthropicProvider",
    "claude_sampling",
    "messages_usage",
]


class AnthropicProvider(AnthropicWireProvider):
    """api.anthropic.com (or a compatible base URL): the Messages API.

    Serves ``/v1/messages`` natively (byte-for-byte) and ``/v1/chat/completions`` by translation
    (OpenAI chat in, OpenAI chat out; see ``docs/translation.md``).
    """

    type: ClassVar[str] = "anthropic"
    default_base_url = "https://api.anthropic.com"
    default_models = ("claude-*",)
    listed_models = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
