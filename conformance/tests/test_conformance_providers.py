"""The first-party provider adapters pass the provider suite (against the simulator)."""

from __future__ import annotations

from tollway_conformance import ProviderSuite


class TestOpenAIProvider(ProviderSuite):
    entry_point = "tollway-provider-openai"
    provider_type = "openai"
    model = "gpt-4o-mini"
    upstream_path = "/v1"


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
