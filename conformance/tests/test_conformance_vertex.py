"""The Vertex AI adapter passes the provider suite against the simulator's Vertex wire, for a
Gemini model (publishers/google) and a Claude model (publishers/anthropic). The service
account is a throwaway whose token endpoint is the simulator's ``/token``."""

from __future__ import annotations

from tollway.config import ProviderConfig
from tollway_conformance import ProviderSuite
from tollway_provider_vertex.testing import service_account_json


class _VertexSuite(ProviderSuite):
    entry_point = "tollway-provider-vertex"
    provider_type = "vertex"

    def provider_config(self, base_url: str) -> ProviderConfig:
        return ProviderConfig(
            name="under-test",
            type=self.provider_type,
            base_url=base_url,
            api_key=service_account_json(f"{base_url}/token"),
            config={"project": "conformance", "location": "us-central1"},
        )


class TestVertexGeminiProvider(_VertexSuite):
    model = "gemini-2.5-flash"


class TestVertexClaudeProvider(_VertexSuite):
    model = "claude-haiku-4-5@20251001"
