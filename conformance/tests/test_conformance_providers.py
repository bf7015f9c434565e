"""The first-party provider adapters pass the provider suite (against the simulator)."""

from __future__ import annotations

from typing import ClassVar

from tollway_conformance import ProviderSuite


class TestOpenAIProvider(ProviderSuite):
    entry_point = "tollway-provider-openai"
    provider_type = "openai"
    model = "gpt-4o-mini"
    upstream_path = "/v1"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"streaming", "tools", "faults", "vision", "embeddings"}
    )
    embedding_model = "text-embedding-3-small"


class TestCustomOpenAIProvider(ProviderSuite):
    """``type = "custom"``: any OpenAI-compatible base URL, every model."""

    entry_point = "tollway-provider-openai"
    provider_type = "custom"
    model = "llama-3.1-8b-instruct"
    upstream_path = "/v1"


class TestAnthropicProvider(ProviderSuite):
    entry_point = "tollway-provider-anthropic"
    provider_type = "anthropic"
    model = "claude-haiku-4-5"
    capabilities: ClassVar[frozenset[str]] = frozenset({"streaming", "tools", "faults", "vision"})
