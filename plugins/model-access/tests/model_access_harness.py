"""The gateway for the end-to-end tests, started with :mod:`tollway.testing`: one static key per
name, each with its own config, addressed by that name."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tollway.testing import GatewayProcess, StaticKey, default_providers
from tollway.testing import start_gateway as _start_gateway

#: Only the plugins of these modules load in the test gateway, so other installed plugins
#: cannot change what these tests see.
MODULES = (
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_model_access",
)


class Gateway(GatewayProcess):
    """A gateway whose keys are addressed by name (one SDK client per key, reused)."""

    def __init__(self, gw: GatewayProcess) -> None:
        super().__init__(gw.proc, gw.url, gw.keys, gw.log, gw.config, gw.data_dir)
        self.secrets = {k.name: k.secret for k in gw.keys}
        self._clients: dict[tuple[str, str], Any] = {}

    def openai(self, key: str) -> Any:  # type: ignore[override]
        if ("openai", key) not in self._clients:
            self._clients["openai", key] = super().openai(self.secrets[key])
        return self._clients["openai", key]

    def anthropic(self, key: str) -> Any:  # type: ignore[override]
        if ("anthropic", key) not in self._clients:
            self._clients["anthropic", key] = super().anthropic(self.secrets[key])
        return self._clients["anthropic", key]

    def post(
        self,
        key: str,
        path: str,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        h = {"authorization": f"Bearer {self.secrets[key]}", "content-type": "application/json"}
        h.update(headers or {})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.url + path, content=content, headers=h, timeout=20)


def start_gateway(
    tmp: Path,
    sim_url: str,
    key_configs: Mapping[str, dict[str, Any]],
    modules: Iterable[str] = MODULES,
) -> Gateway:
    """A gateway in front of ``sim_url`` with one static key per entry of ``key_configs``,
    loading only the plugins of ``modules``."""
    keys = [StaticKey(name=name, config=config) for name, config in key_configs.items()]
    return Gateway(
        _start_gateway(tmp, providers=default_providers(sim_url), keys=keys, plugins=modules)
    )
