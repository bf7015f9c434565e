"""The Vertex AI adapter end to end: the official openai and anthropic SDKs → the gateway
(subprocess) → the provider simulator's Vertex wire (subprocess), with a throwaway service
account whose token endpoint is the simulator's ``/token``."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tollway.config import ProviderConfig
from tollway.testing import (
    SimulatedGateway,
    Simulator,
    default_providers,
    start_simulated_gateway,
    start_simulator,
)
from tollway_provider_vertex import VertexProvider
from tollway_provider_vertex.testing import service_account_json

GEMINI = "gemini-2.5-flash"
CLAUDE = "claude-haiku-4-5@20251001"
#: config.model_ids of the main provider: client names → Vertex ids.
MODEL_IDS = {"claude-sonnet-4-5": "claude-sonnet-4-5@20250929", "fast-model": "gemini-2.5-flash"}
PROJECT = "tollway-test"
EMAIL = "tollway-test@tollway-test.iam.gserviceaccount.com"
PREFIX = f"/v1/projects/{PROJECT}/locations/us-central1/publishers"
HELLO = [{"role": "user", "content": "Say hello to the Vertex lane"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_ANTHROPIC = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}


class Stack(SimulatedGateway):
    def upstream(self, sim: Simulator | None = None, index: int = -1) -> dict[str, Any]:
        """A model request the simulator received (default: the last; token requests
        skipped)."""
        return (sim or self.sim).recorded_request(index, skip_paths={"/token"})

    def token_requests(self, email: str = EMAIL) -> int:
        count = 0
        for r in self.sim.requests():
            if r["path"] != "/token":
                continue
            form = dict(
                pair.split("=", 1) for pair in base64.b64decode(r["body"]).decode().split("&")
            )
            claims = form["assertion"].split(".")[1]
            claims += "=" * (-len(claims) % 4)
            if json.loads(base64.urlsafe_b64decode(claims))["iss"] == email:
                count += 1
        return count


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("vertex-e2e")
    sim = start_simulator()
    down = start_simulator("--fault", "500")
    token_uri = f"{sim.url}/token"
    key_file = tmp / "sa.json"
    key_file.write_text(
        service_account_json(token_uri, "from-file@tollway-test.iam.gserviceaccount.com")
    )
    location = {"project": PROJECT, "location": "us-central1"}
    providers = [
        {
            "name": "vertex",
            "type": "vertex",
            "base_url": sim.url,
            "api_key": service_account_json(token_uri, EMAIL),
            "config": {**location, "model_ids": MODEL_IDS},
        },
        {
            "name": "vertex-from-file",
            "type": "vertex",
            "base_url": sim.url,
            "models": ["from-file-model"],
            "config": {**location, "credentials_file": str(key_file)},
        },
        {
            "name": "vertex-refused",
            "type": "vertex",
            "base_url": sim.url,
            "api_key": service_account_json(
                token_uri, "refused@tollway-test.iam.gserviceaccount.com"
            ),
            "models": ["refused-model"],
            "config": location,
        },
        {
            "name": "vertex-down",
            "type": "vertex",
            "base_url": down.url,
            "api_key": service_account_json(token_uri, EMAIL),
            "models": ["flaky-500"],
            "config": location,
        },
        default_providers(sim.url)[0],
        {
            "name": "openai-backup",
            "type": "openai",
            "base_url": f"{sim.url}/v1",
            "api_key": "sk-backup",
            "models": ["flaky-500"],
            "priority": 5,
        },
    ]
    stack = start_simulated_gateway(tmp, sim, down, cls=Stack, providers=providers)
    yield stack
    stack.stop_all()


# --------------------------------------------------------------------------- tokens


def test_concurrent_first_calls_share_one_token_then_it_is_cached(stack: Stack) -> None:
    client = stack.openai()

    def call(_: int) -> str:
        reply = client.chat.completions.create(model=GEMINI, messages=HELLO)
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(6)))
    assert all(a.startswith("Hello from the Tollway simulator.") for a in answers)
    call(0)
    stack.anthropic().messages.create(model=CLAUDE, max_tokens=50, messages=HELLO)
    assert stack.token_requests() == 1


def test_token_request_is_a_jwt_bearer_grant(stack: Stack) -> None:
    req = next(r for r in stack.sim.requests() if r["path"] == "/token")
    form = dict(pair.split("=", 1) for pair in base64.b64decode(req["body"]).decode().split("&"))
    assert form["grant_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    header = form["assertion"].split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"] == "RS256"


def test_refused_service_account_is_a_502_naming_it(stack: Stack) -> None:
    resp = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "refused-model", "messages": HELLO},
        headers={"authorization": f"Bearer {stack.key}"},
        timeout=20,
    )
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["type"] == "provider_error"
    assert "refused the service account refused@tollway-test" in error["message"]
    assert "PRIVATE KEY" not in resp.text
    assert resp.headers["x-langwatch-provider"] == "vertex"


def test_credentials_file(stack: Stack) -> None:
    reply = stack.openai().chat.completions.create(model="from-file-model", messages=HELLO)
    assert reply.choices[0].message.content
    assert stack.token_requests("from-file@tollway-test.iam.gserviceaccount.com") == 1


# --------------------------------------------------------------------------- Gemini on Vertex


def test_gemini_chat_non_stream_and_stream(stack: Stack) -> None:
    client = stack.openai()
    raw = client.chat.completions.with_raw_response.create(
        model=GEMINI, messages=HELLO, max_tokens=100
    )
    completion = raw.parse()
    upstream = stack.upstream()
    assert upstream["path"] == f"{PREFIX}/google/models/{GEMINI}:generateContent"
    assert upstream["headers"]["authorization"].startswith("Bearer ya29.sim-")
    assert stack.key not in json.dumps(upstream["headers"])
    assert "x-goog-api-key" not in upstream["headers"]
    assert upstream["json"]["generationConfig"] == {"maxOutputTokens": 100}
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-langwatch-provider"] == "vertex"
    assert completion.usage is not None and completion.usage.completion_tokens == 13
    chunks = list(
        client.chat.completions.create(
            model=GEMINI, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    upstream = stack.upstream()
    assert upstream["path"] == f"{PREFIX}/google/models/{GEMINI}:streamGenerateContent"
    assert upstream["query_string"] == "alt=sse"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 13


def test_gemini_tool_calls_for_both_clients(stack: Stack) -> None:
    reply = stack.openai().chat.completions.create(model=GEMINI, messages=HELLO, tools=[WEATHER])
    assert reply.choices[0].finish_reason == "tool_calls"
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "example"}
    with stack.anthropic().messages.stream(
        model=GEMINI, max_tokens=100, messages=HELLO, tools=[WEATHER_ANTHROPIC]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "example"}
    assert final.usage.output_tokens > 0


# --------------------------------------------------------------------------- Claude on Vertex


def test_claude_messages_non_stream_and_stream(stack: Stack) -> None:
    client = stack.anthropic()
    raw = client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=100, system="Be brief.", messages=HELLO
    )
    message = raw.parse()
    upstream = stack.upstream()
    assert upstream["path"] == f"{PREFIX}/anthropic/models/{CLAUDE}:rawPredict"
    assert upstream["headers"]["authorization"].startswith("Bearer ya29.sim-")
    assert "x-api-key" not in upstream["headers"]
    assert "anthropic-version" not in upstream["headers"]
    assert stack.key not in json.dumps(upstream["headers"])
    assert upstream["json"] == {
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": HELLO,
        "anthropic_version": "vertex-2023-10-16",
    }
    assert message.stop_reason == "end_turn"
    assert message.content[0].text.startswith("Hello from the Tollway simulator.")  # type: ignore[union-attr]
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-langwatch-provider"] == "vertex"
    assert "x-langwatch-params-dropped" not in raw.headers
    with client.messages.stream(
        model=CLAUDE, max_tokens=100, messages=HELLO, tools=[WEATHER_ANTHROPIC]
    ) as stream:
        final = stream.get_final_message()
    assert stack.upstream()["path"] == f"{PREFIX}/anthropic/models/{CLAUDE}:streamRawPredict"
    assert final.stop_reason == "tool_use"
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "example"}


def test_claude_chat_non_stream_and_stream(stack: Stack) -> None:
    client = stack.openai()
    reply = client.chat.completions.create(
        model=CLAUDE, messages=HELLO, max_tokens=100, tools=[WEATHER]
    )
    upstream = stack.upstream()
    assert upstream["path"] == f"{PREFIX}/anthropic/models/{CLAUDE}:rawPredict"
    assert "model" not in upstream["json"]
    assert upstream["json"]["anthropic_version"] == "vertex-2023-10-16"
    assert reply.model == CLAUDE
    assert reply.choices[0].finish_reason == "tool_calls"
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    plain = client.chat.completions.create(model=CLAUDE, messages=HELLO, max_tokens=100)
    chunks = list(
        client.chat.completions.create(
            model=CLAUDE,
            messages=HELLO,
            max_tokens=100,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]


def test_claude_errors_are_anthropic_shaped(stack: Stack) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        stack.anthropic().messages.create(
            model=CLAUDE,
            max_tokens=20,
            messages=HELLO,
            extra_headers={"x-simulator-fault": "400"},
        )
    assert info.value.status_code == 400
    assert info.value.response.json()["type"] == "error"


# --------------------------------------------------------------------------- routing


def test_failing_vertex_falls_back_to_openai(stack: Stack) -> None:
    resp = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "flaky-500", "messages": HELLO},
        headers={"authorization": f"Bearer {stack.key}"},
        timeout=20,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-langwatch-fallback-count"] == "1"
    assert resp.headers["x-langwatch-provider"] == "openai"


def test_models_lists_vertex_models(stack: Stack) -> None:
    ids = {m.id for m in stack.openai().models.list()}
    assert {GEMINI, "gemini-2.5-pro", "claude-sonnet-4-5@20250929", CLAUDE} <= ids


# --------------------------------------------------------------------------- configuration


def _provider(tmp: Path | None = None, **kw: Any) -> VertexProvider:
    fields: dict[str, Any] = {"name": "v", "type": "vertex"}
    fields.update(kw)
    return VertexProvider(ProviderConfig(**fields))


def test_validate_names_each_problem_without_secrets(tmp_path: Path) -> None:
    good = service_account_json("https://oauth2.googleapis.com/token")
    assert _provider(api_key=good, config={"project": "p"}).validate() == []
    problems = _provider(config={"location": "Europe West"}).validate()
    assert [p.split(":")[0] for p in problems] == ["config.project", "config.location", "api_key"]
    assert (
        _provider(api_key="not json", config={"project": "p"})
        .validate()[0]
        .startswith("api_key: not a service account JSON key")
    )
    plain = service_account_json("http://oauth.example/token")
    assert (
        "token_uri must be an https URL"
        in _provider(api_key=plain, config={"project": "p"}).validate()[0]
    )
    broken = json.loads(good)
    secret = broken["private_key"]
    broken["private_key"] = secret[:200]
    problems = _provider(api_key=json.dumps(broken), config={"project": "p"}).validate()
    assert problems[0].startswith("api_key: the service account's private_key cannot be loaded")
    assert secret[40:80] not in problems[0]
    missing = _provider(config={"project": "p", "credentials_file": str(tmp_path / "nope.json")})
    assert missing.validate()[0].startswith("config.credentials_file: cannot read")


def test_base_url_follows_the_location() -> None:
    assert _provider(config={"location": "europe-west4"}).base_url == (
        "https://europe-west4-aiplatform.googleapis.com"
    )
    assert _provider(config={"location": "global"}).base_url == "https://aiplatform.googleapis.com"
    provider = _provider(config={"project": "p", "location": "global"})
    assert provider.gemini_url("gemini-2.5-pro", True) == (
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/"
        "models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    )
    assert "BEGIN" not in repr(_provider(api_key=service_account_json("https://x/token")))


def test_model_ids_send_vertex_ids_and_answer_under_the_client_name(stack: Stack) -> None:
    message = stack.anthropic().messages.create(
        model="claude-sonnet-4-5", max_tokens=50, messages=HELLO
    )
    assert message.content[0].type == "text"
    assert stack.upstream()["path"] == (
        f"{PREFIX}/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    )
    reply = stack.openai().chat.completions.create(model="fast-model", messages=HELLO)
    assert reply.model == "fast-model" and reply.choices[0].message.content
    assert stack.upstream()["path"] == f"{PREFIX}/google/models/gemini-2.5-flash:generateContent"
    assert "fast-model" in [m.id for m in stack.openai().models.list()]
