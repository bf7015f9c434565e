"""Pure functions of the adapter: request, answer, usage and error mapping."""

from __future__ import annotations

import json

import pytest
from tollway_provider_acme_wire import (
    AcmeProvider,
    chat_completion,
    error_for_client,
    generate_request,
    usage_of,
)

from tollway import BadRequest, Usage
from tollway.config import ProviderConfig


def test_request_maps_turns_and_limits() -> None:
    body = {
        "model": "acme-large",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "max_completion_tokens": 20,
        "top_p": 0.5,
    }
    out, dropped = generate_request(body, "acme-large")
    assert out["prompt"] == [
        {"speaker": "system", "text": "be brief"},
        {"speaker": "user", "text": "hi"},
    ]
    assert out["max_output"] == 20
    assert "top_p" in dropped


def test_bad_input_is_a_bad_request_naming_the_field() -> None:
    with pytest.raises(BadRequest) as err:
        generate_request({"messages": []}, "acme-large")
    assert err.value.param == "messages"
    with pytest.raises(BadRequest):
        generate_request({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "m")


def test_usage_and_answer() -> None:
    doc = {"output": "hello there", "finish": "limit", "tokens": {"in": 4, "out": 2}}
    usage = usage_of(doc)
    assert usage == Usage(input_tokens=4, output_tokens=2)
    done = chat_completion(doc, "acme-large", usage)
    assert done["choices"][0]["message"]["content"] == "hello there"
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 2
    assert usage_of({"output": "x"}) is None


def test_errors_become_the_openai_envelope() -> None:
    body = json.dumps({"problem": {"kind": "bad_input", "detail": "prompt too long"}}).encode()
    error = json.loads(error_for_client(400, body))["error"]
    assert error["type"] == "invalid_request_error" and error["message"] == "prompt too long"
    assert json.loads(error_for_client(503, b"not json"))["error"]["type"] == "api_error"


def test_api_key_is_required_and_models_served() -> None:
    assert AcmeProvider(ProviderConfig(name="a", type="acme")).validate()
    provider = AcmeProvider(ProviderConfig(name="a", type="acme", api_key="k"))
    assert not provider.validate()
    assert provider.serves("acme-large") and not provider.serves("gpt-4o")
    # messages and responses: translated by the core (chat is the hub)
    assert provider.served == {"chat", "messages", "responses"}
