"""Which sampling parameters a translated request may carry to Anthropic (SPEC §5)."""

from __future__ import annotations

import pytest

from tollway.config import ProviderConfig
from tollway_provider_anthropic import AnthropicProvider, claude_sampling


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-3-5-sonnet-20241022", "all"),
        ("claude-3-opus-20240229", "all"),
        ("claude-3-7-sonnet-latest", "all"),
        ("claude-sonnet-4-20250514", "all"),
        ("claude-opus-4-20250514", "all"),
        ("claude-opus-4-1", "one"),
        ("claude-opus-4-1-20250805", "one"),
        ("claude-sonnet-4-5-20250929", "one"),
        ("claude-haiku-4-5", "one"),
        ("claude-sonnet-4-6", "one"),
        ("claude-opus-4-7", "none"),
        ("claude-opus-5", "none"),
        ("my-claude-alias", "all"),
    ],
)
def test_claude_sampling_by_model_family(model: str, expected: str) -> None:
    assert claude_sampling(model) == expected


def _provider(**config: object) -> AnthropicProvider:
    return AnthropicProvider(
        ProviderConfig(name="a", type="anthropic", api_key="k", config=dict(config))
    )


def test_newer_anthropic_version_takes_no_sampling_parameters() -> None:
    provider = _provider()
    assert provider.sampling_for("claude-3-5-sonnet-latest", "2023-06-01") == "all"
    assert provider.sampling_for("claude-3-5-sonnet-latest", "2026-10-21") == "none"
    assert provider.sampling_for("claude-3-5-sonnet-latest", "2027-01-01") == "none"


def test_configured_sampling_wins_and_is_validated() -> None:
    assert _provider(sampling_params="all").sampling_for("claude-opus-4-7", "2026-10-21") == "all"
    assert _provider(sampling_params="some").validate()
    assert _provider(default_max_tokens=0).validate()
    assert _provider(default_max_tokens=True).validate()
    assert not _provider(default_max_tokens=4096, sampling_params="one").validate()
