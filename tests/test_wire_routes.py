"""The reference's other routes end to end (issue 27): official SDKs → gateway → simulator.

``GET /v1/models/{model}``, ``POST /v1/messages/count_tokens``, ``/v1/moderations`` and
``/v1/images/generations`` — each governed like a model call (key, ``models_allowed``, SPEC
error envelope).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from conftest import Gateway, Simulator, provider_config, start_gateway, stop

from tollway.testing import StaticKey

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


# --- POST /v1/audio/speech, /v1/audio/transcriptions -----------------------------------------


def test_speech_streams_audio_with_the_upstream_content_type(
    gateway: Gateway, sim: Simulator
) -> None:
    text = "Tollway speaks. " * 10
    with gateway.openai().audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        assert response.headers["x-langwatch-provider"] == "openai"
        chunks = list(response.iter_bytes(4096))
    audio = b"".join(chunks)
    assert audio[:4] == b"RIFF" and len(audio) > 8000  # relayed whole, chunk by chunk
    assert _upstream(sim)["path"] == "/v1/audio/speech"


def test_speech_refuses_bad_input(gateway: Gateway, limited: Gateway) -> None:
    r = gateway.post(None, "/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    with pytest.raises(openai.PermissionDeniedError):
        limited.openai().audio.speech.create(model="tts-1", voice="alloy", input="hi")


def test_transcription_round_trip_forwards_only_documented_fields(
    gateway: Gateway, sim: Simulator
) -> None:
    client = gateway.openai()
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 45).content
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", audio, "audio/wav"),
        language="en",
        extra_body={"not_documented": "dropped"},
    )
    assert result.text == "Hello from the Tollway simulator."
    upstream = _upstream(sim)
    assert upstream["path"] == "/v1/audio/transcriptions"
    sent = base64.b64decode(upstream["body"])
    assert b'name="language"' in sent and b'name="model"' in sent and audio in sent
    assert b"not_documented" not in sent
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", audio, "audio/wav"), response_format="verbose_json"
    )
    assert verbose.duration == 3


def test_transcription_over_26_mib_is_413(gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        gateway.openai().audio.transcriptions.create(
            model="whisper-1", file=("big.wav", b"\0" * (30 * 1024 * 1024), "audio/wav")
        )
    assert err.value.status_code == 413
    assert err.value.body["type"] == "payload_too_large"  # type: ignore[index]
    assert "26 MiB" in err.value.body["message"]  # type: ignore[index]


def test_transcription_needs_a_form(gateway: Gateway) -> None:
    r = gateway.post(None, "/v1/audio/transcriptions", {"model": "whisper-1"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_form"
    assert "multipart/form-data" in r.json()["error"]["message"]
    r = gateway.post(
        None,
        "/v1/audio/transcriptions",
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--b--\r\n',
        {"content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


# --- /v1/responses/{id} ----------------------------------------------------------------------


def test_stored_response_retrieve_items_cancel_delete(gateway: Gateway, sim: Simulator) -> None:
    client = gateway.openai()
    created = client.responses.create(model="gpt-4o", input="remember me")
    again = client.responses.retrieve(created.id)
    assert again.id == created.id and again.output_text == created.output_text
    assert _upstream(sim)["path"] == f"/v1/responses/{created.id}"
    items = client.responses.input_items.list(created.id)
    assert items.data[0].content[0].text == "remember me"  # type: ignore[union-attr]
    assert client.responses.cancel(created.id).status == "cancelled"
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):  # the upstream's 404, passed through
        client.responses.retrieve(created.id)
    # A streamed create is recorded too, and a streamed retrieve relayed as events.
    with client.responses.stream(model="gpt-4o", input="streamed") as stream:
        final = stream.get_final_response()
    events = list(client.responses.retrieve(final.id, stream=True))
    assert events[-1].type == "response.completed"


def test_stored_response_unknown_to_the_gateway(gateway: Gateway, sim: Simulator) -> None:
    sim.clear()
    with pytest.raises(openai.NotFoundError) as err:
        gateway.openai().responses.retrieve("resp_never_created_here")
    assert err.value.body["code"] == "response_not_found"  # type: ignore[index]
    assert sim.requests() == []
    unstored = gateway.openai().responses.create(model="gpt-4o", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        gateway.openai().responses.retrieve(unstored.id)


def test_stored_response_owner_is_shared_across_replicas_through_redis(
    sim: Simulator, tmp_path: Path
) -> None:
    env = {"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0"}
    key = StaticKey().secret
    a = start_gateway(tmp_path / "a", provider_config(sim.url), env, key=key)
    b = start_gateway(tmp_path / "b", provider_config(sim.url), env, key=key)
    try:
        created = a.openai().responses.create(model="gpt-4o", input="one replica")
        deadline = time.monotonic() + 5
        while True:  # recorded when the call ends, off the answer's path
            try:
                found = b.openai().responses.retrieve(created.id)
                break
            except openai.NotFoundError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert found.id == created.id
    finally:
        stop(a.proc)
        stop(b.proc)


# --- POST /v1/realtime/client_secrets ---------------------------------------------------------


def test_realtime_client_secret_for_an_allowed_model(gateway: Gateway, limited: Gateway) -> None:
    secret = gateway.openai().realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime"}
    )
    assert secret.value.startswith("ek_") and secret.expires_at > time.time()
    with pytest.raises(openai.PermissionDeniedError):
        limited.openai().realtime.client_secrets.create(
            session={"type": "realtime", "model": "gpt-realtime"}
        )
    r = gateway.post(None, "/v1/realtime/client_secrets", {"session": {"type": "realtime"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "session.model"
    big = {"session": {"model": "gpt-realtime", "instructions": "x" * 70_000}}
    r = gateway.post(None, "/v1/realtime/client_secrets", big)
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"


# --- Gemini-native /v1beta (the Google GenAI SDK) -----------------------------------------------


@pytest.fixture(scope="module")
def with_gemini(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = (
        provider_config(sim.url)
        + f"""
[[providers]]
name = "sim-gemini"
type = "gemini"
base_url = "{sim.url}"
api_key = "gemini-upstream-key"
"""
    )
    gw = start_gateway(tmp_path_factory.mktemp("gemini"), config)
    yield gw
    stop(gw.proc)


def _genai(gw: Gateway, key: str | None = None) -> Any:
    from google import genai

    return genai.Client(api_key=key or gw.key, http_options={"base_url": gw.url, "timeout": 20_000})


def test_google_genai_sdk_generates_through_the_gateway(
    with_gemini: Gateway, sim: Simulator
) -> None:
    client = _genai(with_gemini)
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="Say hello")
    assert "Hello from the Tollway simulator" in (answer.text or "")
    assert answer.usage_metadata is not None and answer.usage_metadata.prompt_token_count
    upstream = _upstream(sim)
    assert upstream["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    headers = {k.lower(): v for k, v in upstream["headers"]}
    assert headers["x-goog-api-key"] == "gemini-upstream-key"
    assert with_gemini.key not in str(upstream["headers"])
    text = "".join(
        chunk.text or ""
        for chunk in client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Say hello"
        )
    )
    assert "Hello from the Tollway simulator" in text
    assert _upstream(sim)["query_string"] == "alt=sse"


def test_gemini_native_refusals_are_envelopes(with_gemini: Gateway) -> None:
    from google.genai import errors

    stranger = _genai(with_gemini, "lw_vk_live_" + "0" * 29)
    with pytest.raises(errors.ClientError) as err:
        stranger.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert err.value.code == 401
    # A model no Gemini provider serves on this wire.
    client = _genai(with_gemini)
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gpt-4o", contents="x")
    assert err.value.code == 403
    r = with_gemini.post(None, "/v1beta/models/gemini-2.5-flash:embedContent", {"content": {}})
    assert r.status_code == 404 and "generateContent" in r.json()["error"]["message"]


def test_count_tokens_estimated_by_a_gemini_provider(with_gemini: Gateway) -> None:
    raw = anthropic.Anthropic(
        base_url=with_gemini.url, api_key=with_gemini.key, max_retries=0
    ).messages.with_raw_response.count_tokens(model="gemini-2.5-flash", messages=PROMPT)
    assert raw.headers["x-langwatch-provider"] == "gemini"
    assert raw.headers["x-langwatch-token-count"] == "estimated"
    assert raw.parse().input_tokens > 0
