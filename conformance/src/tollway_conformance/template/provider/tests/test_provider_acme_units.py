"""Pure functions of the adapter."""

from __future__ import annotations

from tollway_provider_acme import AcmeProvider, usage_of

from tollway import Usage
from tollway.config import ProviderConfig


def test_usage_of_a_completion() -> None:
    doc = {"usage": {"prompt_tokens": 12, "completion_tokens": 5}}
    assert usage_of(doc) == Usage(input_tokens=12, output_tokens=5)


def test_cached_tokens_are_not_counted_twice() -> None:
    doc = {
        "usage": {
            "prompt_tokens": 2000,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 1024},
        }
    }
    assert usage_of(doc) == Usage(input_tokens=976, output_tokens=5, cache_read_input_tokens=1024)


def test_no_usage() -> None:
    assert usage_of({"usage": None}) is None
    assert usage_of([1]) is None


def test_api_key_is_required() -> None:
    assert AcmeProvider(ProviderConfig(name="a", type="acme")).validate()
    assert not AcmeProvider(ProviderConfig(name="a", type="acme", api_key="k")).validate()


def test_serves_its_models() -> None:
    provider = AcmeProvider(ProviderConfig(name="a", type="acme", api_key="k"))
    assert provider.serves("acme-large") and not provider.serves("gpt-4o")
