"""The service account's ``token_uri`` goes through the SSRF guard: at start-up (config file),
when the control plane stores the provider, and when the token source connects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tollway import UpstreamConnectError
from tollway.config import ConfigError, ProviderConfig, load_settings
from tollway.gateway import Gateway
from tollway.outbound import OutboundPolicy
from tollway.provider import adapter_problems
from tollway_provider_vertex import TokenSource
from tollway_provider_vertex.testing import service_account_json

LOCATION = {"project": "p", "location": "us-central1"}


def _config(token_uri: str) -> ProviderConfig:
    return ProviderConfig(
        name="vertex", type="vertex", api_key=service_account_json(token_uri), config=LOCATION
    )


@pytest.mark.parametrize(
    "token_uri",
    ["https://127.1/token", "https://[::ffff:10.0.0.1]/token", "https://169.254.169.254/t"],
)
def test_a_guarded_token_uri_is_refused_when_stored(token_uri: str) -> None:
    problems = adapter_problems(_config(token_uri), OutboundPolicy()) or []
    assert any(p.startswith("api_key.token_uri: ") and "SSRF guard" in p for p in problems)
    assert adapter_problems(_config(token_uri), OutboundPolicy(guard=False)) == []
    assert adapter_problems(_config("https://oauth2.googleapis.com/token"), OutboundPolicy()) == []


def test_a_guarded_token_uri_stops_start_up(tmp_path: Path) -> None:
    key = tmp_path / "sa.json"
    key.write_text(service_account_json("https://2130706433/token"))
    settings = load_settings(
        {"TOLLWAY_PLUGINS": "tollway-provider-vertex"},
        overrides={
            "providers": [
                {
                    "name": "vertex",
                    "type": "vertex",
                    "config": {**LOCATION, "credentials_file": str(key)},
                }
            ]
        },
    )
    with pytest.raises(ConfigError, match=r"config\.credentials_file\.token_uri: 2130706433"):
        Gateway(settings)


def test_the_token_source_checks_when_connecting() -> None:
    info = orjson.loads(service_account_json("http://localhost:1/token"))
    source = TokenSource(info, policy=OutboundPolicy())
    with pytest.raises(UpstreamConnectError, match="refused by the SSRF guard"):
        asyncio.run(source.token())
