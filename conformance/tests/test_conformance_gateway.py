"""The black-box gateway suite against a gateway (OpenAI and Anthropic providers) and the
simulator, started here; the same suite runs against any deployment with --tollway-url."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tollway_conformance import GatewaySuite
from tollway_conformance.harness import Simulator, Target, start_gateway, stop


@pytest.fixture(scope="module")
def tollway_target(
    tollway_simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    config = f"""
[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{tollway_simulator.url}/v1"
api_key = "sk-upstream-openai"

[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{tollway_simulator.url}"
api_key = "sk-ant-upstream"
"""
    gw = start_gateway(
        tmp_path_factory.mktemp("gateway-suite"),
        config,
        plugins=["tollway-provider-openai", "tollway-provider-anthropic", "tollway-static-keys"],
    )
    yield Target(gw.url, gw.key, "gpt-4o-mini")
    stop(gw.proc)


class TestGatewayContract(GatewaySuite):
    """SPEC §2 through the official SDKs."""


class TestGatewayContractAnthropicModel(GatewaySuite):
    """The same contract when the model is served by the Anthropic provider (chat translated)."""

    @pytest.fixture
    def tollway_target(self, tollway_target: Target) -> Target:
        return Target(tollway_target.url, tollway_target.key, "claude-haiku-4-5")
