"""The Bedrock provider adapter passes the provider suite against the simulator's Converse wire
(SigV4-signed with the simulator's test credential)."""

from __future__ import annotations

from tollway.config import ProviderConfig
from tollway_conformance import ProviderSuite
from tollway_simulator.bedrock_wire import ACCESS_KEY_ID, SECRET_ACCESS_KEY


class TestBedrockProvider(ProviderSuite):
    entry_point = "tollway-provider-bedrock"
    provider_type = "bedrock"
    model = "anthropic.claude-3-5-sonnet-20240620-v1:0"

    def provider_config(self, base_url: str) -> ProviderConfig:
        return ProviderConfig(
            name="under-test",
            type=self.provider_type,
            base_url=base_url,
            api_key=f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}",
            config={"region": "us-east-1"},
        )
