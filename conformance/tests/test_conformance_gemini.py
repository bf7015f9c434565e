"""The Gemini adapter passes the provider suite (against the simulator's Gemini wire)."""

from __future__ import annotations

from tollway_conformance import ProviderSuite


class TestGeminiProvider(ProviderSuite):
    entry_point = "tollway-provider-gemini"
    provider_type = "gemini"
    model = "gemini-2.5-flash"
