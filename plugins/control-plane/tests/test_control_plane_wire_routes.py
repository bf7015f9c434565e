"""Issue 27's "Done when", tried as a new user would: one virtual key synthesises speech,
transcribes it back, counts tokens for a Claude prompt, generates through the Google GenAI SDK
and retrieves a stored response — each found in the request explorer with its cost.

Real processes: the simulator, ``tollway serve`` with its embedded control plane, vk-auth,
telemetry and budgets, the official openai / anthropic / google-genai SDKs, the CLI.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from control_plane_helpers import embedded_serve, stop, tollway, tollway_json

from tollway.testing import Simulator, start_simulator

pytestmark = pytest.mark.skipif(
    not all(
        importlib.util.find_spec(m)
        for m in (
            "tollway_vk_auth",
            "tollway_telemetry",
            "tollway_simulator",
            "tollway_provider_openai",
            "tollway_provider_anthropic",
            "tollway_provider_gemini",
            "tollway_budgets",
            "openai",
            "anthropic",
            "google.genai",
        )
    ),
    reason="needs the openai, anthropic and gemini providers, vk-auth, telemetry, budgets, "
    "the simulator and the three SDKs",
)

PLUGINS = (
    "tollway-control-plane,tollway-vk-auth,tollway-telemetry,tollway-provider-openai,"
    "tollway-provider-anthropic,tollway-provider-gemini,tollway-budgets"
)


class Embedded:
    def __init__(self, url: str, data_dir: Path, env: dict[str, str], sim: Simulator) -> None:
        self.url = url
        self.data_dir = data_dir
        self.env = env
        self.sim = sim

    def cli_json(self, *args: str) -> Any:
        return tollway_json(self.data_dir, *args, env=self.env)

    def record(self, request_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            proc = tollway(
                self.data_dir, "requests", "get", request_id, "--json", env=self.env, check=False
            )
            if proc.returncode == 0:
                record: dict[str, Any] = orjson.loads(proc.stdout)
                return record
            assert time.monotonic() < deadline, f"{request_id} was never stored: {proc.stderr}"
            time.sleep(0.3)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    tmp = tmp_path_factory.mktemp("wire")
    sim = start_simulator()
    try:
        with embedded_serve(tmp, PLUGINS, drop=("GOOGLE_",)) as (url, env, _):
            yield Embedded(url, tmp / "data", env, sim)
    finally:
        stop(sim.proc)


def test_done_when_one_key_across_the_new_wires(gateway: Embedded) -> None:
    import anthropic
    import openai
    from google import genai

    sim = gateway.sim.url
    for kind, base in (("openai", f"{sim}/v1"), ("anthropic", sim), ("gemini", sim)):
        gateway.cli_json(
            "model-providers",
            "create",
            "--type",
            kind,
            "--name",
            f"sim-{kind}",
            "--api-key",
            f"upstream-{kind}-key",
            "--base-url",
            base,
        )
    key = gateway.cli_json("virtual-keys", "create", "--name", "new-user")["secret"]
    oai = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    ids: dict[str, str] = {}

    with oai.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Tollway turns this text into speech."
    ) as speech:
        ids["speech"] = speech.headers["x-langwatch-request-id"]
        audio = speech.read()
    assert audio[:4] == b"RIFF"

    heard = oai.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("speech.wav", audio, "audio/wav")
    )
    ids["transcription"] = heard.headers["x-langwatch-request-id"]
    assert heard.parse().text

    claude = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    counted = claude.messages.with_raw_response.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "How long is this?"}]
    )
    ids["count_tokens"] = counted.headers["x-langwatch-request-id"]
    assert counted.parse().input_tokens > 0

    google = genai.Client(api_key=key, http_options={"base_url": gateway.url})
    generated = google.models.generate_content(model="gemini-2.5-flash", contents="Say hello")
    assert generated.text and generated.sdk_http_response is not None
    assert generated.sdk_http_response.headers is not None
    ids["gemini"] = generated.sdk_http_response.headers["x-langwatch-request-id"]

    image = oai.images.with_raw_response.generate(model="gpt-image-1", prompt="a lighthouse")
    ids["image"] = image.headers["x-langwatch-request-id"]
    assert image.parse().data

    created = oai.responses.create(model="gpt-4o", input="keep this one")
    retrieved = oai.responses.with_raw_response.retrieve(created.id)
    ids["retrieve"] = retrieved.headers["x-langwatch-request-id"]
    assert retrieved.parse().id == created.id

    records = {name: gateway.record(rid) for name, rid in ids.items()}
    for name, record in records.items():
        assert record["status_code"] == 200 and record["outcome"] == "ok", (name, record)
        assert "cost_usd" in record, name
    # Priced routes cost what the price table says; counting and retrieving are free.
    assert records["speech"]["cost_usd"] > 0
    assert records["speech"]["provider_type"] == "openai"
    assert records["transcription"]["cost_usd"] > 0
    assert records["image"]["cost_usd"] > 0
    assert records["gemini"]["cost_usd"] > 0
    assert records["gemini"]["provider_type"] == "gemini"
    assert records["gemini"]["tokens"]["input"] > 0
    assert not records["count_tokens"]["cost_usd"]
    assert records["count_tokens"]["provider_type"] == "anthropic"
    assert not records["retrieve"]["cost_usd"]
    assert records["retrieve"]["model"] == "gpt-4o"
