"""The adapter passes the conformance kit's provider suite and hook-plugin suite.

The simulator stands in for Acme: it speaks the OpenAI chat wire under ``/v1``.
"""

from __future__ import annotations

from tollway_conformance import HookPluginSuite, ProviderSuite


class TestAcmeProvider(ProviderSuite):
    entry_point = "tollway-provider-acme"
    provider_type = "acme"
    model = "acme-large"
    upstream_path = "/v1"


class TestAcmePluginConforms(HookPluginSuite):
    entry_point = "tollway-provider-acme"
