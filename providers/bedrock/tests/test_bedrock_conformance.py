"""This package passes the conformance kit's hook-plugin suite (its provider suite runs in
conformance/tests/test_conformance_bedrock.py, against the simulator's Converse wire)."""

from __future__ import annotations

from tollway_conformance import HookPluginSuite


class TestTollwayProviderBedrockConforms(HookPluginSuite):
    entry_point = "tollway-provider-bedrock"
