"""The Azure adapter's configuration, model map and URLs (pure functions, no processes)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway import RouteTarget
from tollway.config import ProviderConfig
from tollway_provider_azure import DEFAULT_API_VERSION, AzureOpenAIProvider, azure_url

BASE = "https://acme.openai.azure.com"
MAP = {"gpt-4o": "prod-gpt4o", "text-embedding-3-small": "embed-small"}


def _provider(
    config: dict[str, Any] | None = None,
    *,
    base_url: str | None = BASE,
    api_key: str | None = "azure-key",
    models: list[str] | None = None,
) -> AzureOpenAIProvider:
    return AzureOpenAIProvider(
        ProviderConfig(
            name="az",
            type="azure",
            base_url=base_url,
            api_key=api_key,
            models=models,
            config={"deployments": MAP} if config is None else config,
        )
    )


def test_a_complete_config_has_no_problems() -> None:
    assert _provider().validate() == []
    assert _provider({"deployment_fallback": True}).validate() == []
    full = {
        "deployments": MAP,
        "api_version": "2025-04-01-preview",
        "responses_api_version": "preview",
        "auth": "bearer",
        "max_tokens_field": "max_tokens",
        "sampling_params": "none",
    }
    assert _provider(full).validate() == []


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"base_url": None}, "base_url: an azure provider needs its resource endpoint"),
        ({"base_url": f"{BASE}/openai"}, "give only the resource endpoint"),
        ({"base_url": f"{BASE}/openai/deployments/x"}, "includes the API path"),
        ({"api_key": None}, "api_key: an azure provider needs the resource's key"),
        ({"config": {}}, "config.deployments: map at least one model id"),
        ({"config": {"deployments": ["gpt-4o"]}}, "config.deployments: must be a table"),
        ({"config": {"deployments": {"gpt-4o": "a/b"}}}, "config.deployments.gpt-4o: 'a/b'"),
        ({"config": {"deployments": {"gpt-*": "x"}}}, "globs are not allowed"),
        ({"config": {"deployment": MAP}}, "config: unknown key(s) deployment"),
        ({"config": {"deployments": MAP, "api_version": "2024 10"}}, "config.api_version:"),
        ({"config": {"deployments": MAP, "auth": "entra"}}, "config.auth: 'entra'"),
        ({"config": {"deployment_fallback": "yes"}}, "config.deployment_fallback: 'yes'"),
        ({"models": ["gpt-4o", "o3"]}, "models: o3 not in config.deployments"),
        ({"config": {"deployments": MAP, "sampling_params": "x"}}, "config.sampling_params"),
    ],
)
def test_each_problem_is_named(kwargs: dict[str, Any], expected: str) -> None:
    problems = _provider(**kwargs).validate()
    assert any(expected in p for p in problems), problems


def test_the_deployment_map_decides_what_is_served_and_listed() -> None:
    p = _provider()
    assert p.serves("gpt-4o") and p.serves("text-embedding-3-small")
    assert not p.serves("gpt-4o-mini")
    assert p.models() == ["gpt-4o", "text-embedding-3-small"]
    assert p.deployment_for("gpt-4o") == "prod-gpt4o"
    assert p.deployment_for("gpt-4o-mini") is None


def test_fallback_serves_other_models_under_their_own_name() -> None:
    p = _provider({"deployments": MAP, "deployment_fallback": True})
    assert p.serves("gpt-4.1") and p.deployment_for("gpt-4.1") == "gpt-4.1"
    assert p.deployment_for("gpt-4o") == "prod-gpt4o"
    assert p.models() == ["gpt-4o", "text-embedding-3-small"]
    limited = _provider({"deployments": MAP, "deployment_fallback": True}, models=["gpt-4*"])
    assert limited.serves("gpt-4.1") and not limited.serves("o3")


def test_models_filters_the_map() -> None:
    p = _provider(models=["gpt-4o"])
    assert p.serves("gpt-4o") and not p.serves("text-embedding-3-small")
    assert p.models() == ["gpt-4o"]


def test_urls() -> None:
    assert (
        azure_url(BASE, "chat", "prod-gpt4o")
        == f"{BASE}/openai/deployments/prod-gpt4o/chat/completions"
        f"?api-version={DEFAULT_API_VERSION}"
    )
    assert (
        azure_url(BASE, "embeddings", "e", api_version="2024-06-01")
        == f"{BASE}/openai/deployments/e/embeddings?api-version=2024-06-01"
    )
    assert azure_url(BASE, "responses", "d") == f"{BASE}/openai/v1/responses"
    assert (
        azure_url(BASE, "responses", "d", responses_api_version="preview")
        == f"{BASE}/openai/v1/responses?api-version=preview"
    )
    assert (
        azure_url(BASE, "responses", "d", responses_api_version="2025-04-01-preview")
        == f"{BASE}/openai/responses?api-version=2025-04-01-preview"
    )
    # The client's query travels along; its api-version does not override the operator's.
    assert (
        azure_url(BASE, "chat", "d", query_string=b"api-version=1999-01-01&trace=on")
        == f"{BASE}/openai/deployments/d/chat/completions?api-version={DEFAULT_API_VERSION}"
        "&trace=on"
    )


@given(st.text(min_size=1, max_size=80))
def test_a_pinned_model_never_escapes_the_deployment_segment(model: str) -> None:
    """A routing policy may pin any model; it becomes one percent-encoded path segment."""
    p = _provider()
    url = p.endpoint_url("chat", RouteTarget("az", model), b"")
    assert url.startswith(f"{BASE}/openai/deployments/")
    segment = url.removeprefix(f"{BASE}/openai/deployments/").split("/chat/completions?")[0]
    assert "/" not in segment and "?" not in segment and "#" not in segment


def test_auth_headers_and_no_secret_in_repr() -> None:
    assert _provider().auth_headers() == {"api-key": "azure-key"}
    bearer = _provider({"deployments": MAP, "auth": "bearer"})
    assert bearer.auth_headers() == {"authorization": "Bearer azure-key"}
    assert "azure-key" not in repr(bearer) and "azure-key" not in repr(bearer.config)
    assert not any("azure-key" in line for line in _provider({"auth": "x"}).validate())
