"""The Azure OpenAI adapter passes the provider suite (against the simulator's Azure wire)."""

from __future__ import annotations

import attrs

from tollway.config import ProviderConfig
from tollway_conformance import ProviderSuite
from tollway_conformance.provider import UNREACHABLE_MODEL


class TestAzureOpenAIProvider(ProviderSuite):
    """``type = "azure"``: the model is served through a deployment of another name."""

    entry_point = "tollway-provider-azure"
    provider_type = "azure"
    model = "gpt-4o-mini"

    def provider_config(self, base_url: str) -> ProviderConfig:
        return ProviderConfig(
            name="under-test",
            type=self.provider_type,
            base_url=base_url,
            api_key="sk-conformance",
            config={"deployments": {self.model: "conformance-mini"}},
        )

    def unreachable_config(self, base_url: str) -> ProviderConfig:
        return attrs.evolve(
            super().unreachable_config(base_url),
            config={"deployments": {UNREACHABLE_MODEL: "conformance-unreachable"}},
        )
