"""The gateway for the end-to-end tests, started with :mod:`tollway.testing`: static keys whose
guardrails configs name the ``pii`` evaluator, addressed by name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tollway.testing import GatewayProcess, StaticKey, default_providers
from tollway.testing import start_gateway as _start_gateway

PLUGINS = (
    "tollway-provider-openai",
    "tollway-provider-anthropic",
    "tollway-static-keys",
    "tollway-guardrails",
    "tollway-pii-redact",
)


class Gateway(GatewayProcess):
    """A gateway whose keys are addressed by name."""

    def __init__(self, gw: GatewayProcess) -> None:
        super().__init__(gw.proc, gw.url, gw.keys, gw.log, gw.config, gw.data_dir)
        self.secrets = {k.name: k.secret for k in gw.keys}

    def openai(self, key: str, **kw: Any) -> Any:  # type: ignore[override]
        return super().openai(self.secrets[key], **kw)

    def anthropic(self, key: str, **kw: Any) -> Any:  # type: ignore[override]
        return super().anthropic(self.secrets[key], **kw)


def start_gateway(
    tmp: Path, sim_url: str, key_configs: Mapping[str, dict[str, Any]], config: str = ""
) -> Gateway:
    """A gateway in front of ``sim_url`` with one static key per entry of ``key_configs``;
    ``config`` is extra TOML (e.g. a ``[plugin.guardrails]`` table)."""
    keys = [StaticKey(name=name, config=config) for name, config in key_configs.items()]
    return Gateway(
        _start_gateway(
            tmp, config, providers=default_providers(sim_url), keys=keys, plugins=PLUGINS
        )
    )
