"""The reference's other routes end to end (issue 27): official SDKs → gateway → simulator.

``GET /v1/models/{model}``, ``POST /v1/messages/count_tokens``, ``/v1/moderations`` and
``/v1/images/generations`` — each governed like a model call (key, ``models_allowed``, SPEC
error envelope).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import anthropic
import openai
import orjson
import pytest
from conftest import Gateway, Simulator, provider_config, start_gateway, stop

CLAUDE = "claude-sonnet-4-5"
PROMPT = [{"role": "user", "content": "How many tokens is this?"}]


@pytest.fixture(scope="module")
def limited(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("limited"),
        provider_config(sim.url),
        key_config={"models_allowed": ["gpt-4o", CLAUDE]},
    )
    yield gw
    stop(gw.proc)


def _upstream(sim: Simulator) -> dict:
    return sim.last_request()


# --- GET /v1/models/{model} ------------------------------------------------------------------


def test_model_retrieve_is_the_keys_view(gateway: Gateway) -> None:
    client = gateway.openai()
    model = client.models.retrieve("gpt-4o")
    assert model.id == "gpt-4o" and model.owned_by == "openai"
    # Served by a glob (gpt-*) though not listed: the key can call it, so it is shown.
    assert client.models.retrieve("gpt-4.1-nano").id == "gpt-4.1-nano"
    # A slash in the id is part of it.
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("vendor/no-such-model")
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found"
    assert "GET /v1/models" in body["message"]


def test_model_retrieve_hides_what_the_key_may_not_use(limited: Gateway) -> None:
    client = limited.openai()
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o-mini")


def test_model_retrieve_needs_a_key(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        gateway.openai(key="lw_vk_live_" + "0" * 40).models.retrieve("gpt-4o")


# --- POST /v1/messages/count_tokens --------------------------------------------------------


def test_count_tokens_passes_through_to_anthropic(gateway: Gateway, sim: Simulator) -> None:
    counted = gateway.anthropic().messages.count_tokens(model=CLAUDE, messages=PROMPT)
    assert counted.input_tokens > 0
    upstream = _upstream(sim)
    assert upstream["path"] == "/v1/messages/count_tokens"
    headers = {k.lower(): v for k, v in upstream["headers"]}
    assert headers["x-api-key"] == "sk-ant-upstream"
    assert orjson.loads(base64.b64decode(upstream["body"]))["messages"] == PROMPT


def test_count_tokens_estimated_for_other_providers(gateway: Gateway, sim: Simulator) -> None:
    sim.clear()
    raw = gateway.anthropic().messages.with_raw_response.count_tokens(
        model="gpt-4o", messages=PROMPT
    )
    assert raw.headers["x-langwatch-token-count"] == "estimated"
    assert raw.headers["x-langwatch-provider"] == "openai"
    assert raw.parse().input_tokens == -(-len(orjson.dumps({"messages": PROMPT})) // 4)
    assert sim.requests() == []  # no upstream call


def test_count_tokens_errors_are_anthropic_shaped(gateway: Gateway, limited: Gateway) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        limited.anthropic().messages.count_tokens(model="claude-haiku-4-5", messages=PROMPT)
    assert err.value.body["type"] == "error"  # type: ignore[index]
    r = gateway.post(None, "/v1/messages/count_tokens", {"model": CLAUDE})
    assert r.status_code == 400
    assert r.json()["type"] == "error" and "messages" in r.json()["error"]["message"]


# --- POST /v1/moderations, /v1/images/generations -------------------------------------------


def test_moderations(gateway: Gateway, sim: Simulator) -> None:
    result = gateway.openai().moderations.create(input=["fine", "flag-me please"])
    assert [r.flagged for r in result.results] == [False, True]
    assert _upstream(sim)["path"] == "/v1/moderations"
    # No model named: OpenAI's default, routed like any other.
    body = orjson.loads(base64.b64decode(_upstream(sim)["body"]))
    assert body["model"] == "omni-moderation-latest"


def test_images(gateway: Gateway, sim: Simulator) -> None:
    raw = gateway.openai().images.with_raw_response.generate(
        model="gpt-image-1", prompt="a lighthouse", n=2
    )
    images = raw.parse()
    assert len(images.data) == 2 and images.data[0].b64_json
    assert raw.headers["x-langwatch-provider"] == "openai"
    assert _upstream(sim)["path"] == "/v1/images/generations"


def test_images_refuse_a_model_the_key_may_not_use(limited: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        limited.openai().images.generate(model="gpt-image-1", prompt="a lighthouse")
    assert err.value.body["type"] == "model_not_allowed"  # type: ignore[index]


def test_images_need_a_model(gateway: Gateway) -> None:
    r = gateway.post(None, "/v1/images/generations", {"prompt": "a lighthouse"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model"


def test_unknown_route_lists_the_served_ones(gateway: Gateway) -> None:
    r = gateway.post(None, "/v1/audio/nothing", {})
    assert r.status_code == 404
    assert "/v1/moderations" in r.json()["error"]["message"]
