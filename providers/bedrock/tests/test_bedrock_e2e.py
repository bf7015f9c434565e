"""OpenAI and Anthropic clients on a Bedrock provider, end to end: the official SDKs → the
gateway (subprocess) → the provider simulator's Converse wire (subprocess), which verifies the
SigV4 signature of every request with botocore."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tollway.config import ProviderConfig
from tollway.testing import SimulatedGateway, start_simulated_gateway, start_simulator
from tollway_provider_bedrock import BedrockProvider
from tollway_simulator.bedrock_wire import ACCESS_KEY_ID, API_KEY, SECRET_ACCESS_KEY

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NOVA = "amazon.nova-pro-v1:0"
WRONG_SECRET = "wrongsecret.model-v1:0"
BEARER = "bearer.model-v1:0"
FALLBACK_500 = "fallback.five-hundred-v1:0"
FALLBACK_429 = "fallback.throttled-v1:0"
FALLBACK_EXCEPTION = "fallback.stream-exception-v1:0"
HELLO = [{"role": "user", "content": "Say hello to the Bedrock lane"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
CREDENTIAL = f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}"
REGION = {"region": "us-east-1"}


#: A gateway in front of a healthy simulator (and two failing ones for fallback);
#: ``upstream()`` is the healthy simulator's last request.
Stack = SimulatedGateway


MAPPED = "claude-sonnet-4-5"
MAPPED_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sim = start_simulator()
    sim500 = start_simulator("--fault", "500")
    sim429 = start_simulator("--fault", "429")
    providers = [
        {
            "name": "bedrock",
            "type": "bedrock",
            "base_url": sim.url,
            "api_key": CREDENTIAL,
            "config": REGION,
        },
        {
            "name": "bedrock-wrong-secret",
            "type": "bedrock",
            "base_url": sim.url,
            "api_key": f"{ACCESS_KEY_ID}:not-the-secret",
            "models": [WRONG_SECRET],
            "config": REGION,
        },
        {
            "name": "bedrock-api-key",
            "type": "bedrock",
            "base_url": sim.url,
            "api_key": API_KEY,
            "models": [BEARER],
            "config": {"region": "eu-west-1", "auth": "bearer"},
        },
        {
            "name": "bedrock-500",
            "type": "bedrock",
            "base_url": sim500.url,
            "api_key": CREDENTIAL,
            "models": [FALLBACK_500],
            "config": REGION,
        },
        {
            "name": "bedrock-429",
            "type": "bedrock",
            "base_url": sim429.url,
            "api_key": CREDENTIAL,
            "models": [FALLBACK_429],
            "config": REGION,
        },
        {
            "name": "bedrock-stream-exception",
            "type": "bedrock",
            "base_url": sim.url,
            "api_key": CREDENTIAL,
            "models": [FALLBACK_EXCEPTION],
            "config": REGION,
        },
        {
            "name": "bedrock-mapped",
            "type": "bedrock",
            "base_url": sim.url,
            "api_key": CREDENTIAL,
            "models": [],  # only what model_ids maps (the other tests keep one Bedrock lane)
            "config": {**REGION, "model_ids": {MAPPED: MAPPED_ID}},
        },
        {
            "name": "openai-backup",
            "type": "openai",
            "base_url": f"{sim.url}/v1",
            "api_key": "sk-upstream-openai",
            "models": [FALLBACK_500, FALLBACK_429, FALLBACK_EXCEPTION],
            "priority": 10,
        },
    ]
    stack = start_simulated_gateway(
        tmp_path_factory.mktemp("bedrock-e2e"),
        sim,
        sim500,
        sim429,
        providers=providers,
        plugins=["tollway_static_keys", "tollway_provider_bedrock", "tollway_provider_openai"],
    )
    yield stack
    stack.stop_all()


# --------------------------------------------------------------------------- chat (openai SDK)


def test_chat_non_stream_is_signed_and_uses_the_encoded_model_id(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        max_tokens=200,
        temperature=0.5,
    )
    completion = raw.parse()
    upstream = stack.upstream()
    assert completion.choices[0].message.content == (
        "Hello from the Tollway simulator. You said: Say hello to the Bedrock lane"
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 13  # one per word
    assert raw.headers["x-langwatch-provider"] == "bedrock"
    assert "x-langwatch-params-dropped" not in raw.headers
    # The path as the simulator received it: the model id is one percent-encoded segment.
    assert raw.headers["x-simulator-raw-path"] == (
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    )
    headers = upstream["headers"]
    assert (
        headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")
        and "/us-east-1/bedrock/aws4_request" in headers["authorization"]
    )
    assert headers["x-amz-date"] and headers["content-type"] == "application/json"
    assert SECRET_ACCESS_KEY not in str(headers) and stack.key not in str(headers)
    assert upstream["json"] == {
        "messages": [{"role": "user", "content": [{"text": HELLO[0]["content"]}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 200, "temperature": 0.5},
    }
    assert SECRET_ACCESS_KEY not in stack.logs()


def test_chat_stream_matches_non_stream_with_usage_when_asked(stack: Stack) -> None:
    client = stack.openai()
    plain = client.chat.completions.create(model=NOVA, messages=HELLO, max_tokens=200)
    chunks = list(
        client.chat.completions.create(
            model=NOVA,
            messages=HELLO,
            max_tokens=200,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert stack.upstream()["path"] == "/model/amazon.nova-pro-v1:0/converse-stream"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert plain.usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    bare = list(
        client.chat.completions.create(model=NOVA, messages=HELLO, max_tokens=200, stream=True)
    )
    assert all(c.choices for c in bare) and all(c.usage is None for c in bare)


def test_chat_tool_call_streamed_then_the_result(stack: Stack) -> None:
    client = stack.openai()
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    with client.chat.completions.stream(
        model=MODEL, messages=messages, tools=[WEATHER], max_tokens=300
    ) as stream:
        deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"city": "example", "days": 1}  # type: ignore[union-attr]
    assert call.id.startswith("tooluse_") and deltas
    assert stack.upstream()["json"]["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "inputSchema": {"json": WEATHER["function"]["parameters"]},
                }
            }
        ]
    }
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], max_tokens=300
    )
    assert answer.choices[0].message.content.endswith("Received the tool result.")  # type: ignore[union-attr]
    assert answer.choices[0].finish_reason == "stop"
    sent = stack.upstream()["json"]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {
                "toolUse": {
                    "toolUseId": call.id,
                    "name": "get_weather",
                    "input": {"city": "example", "days": 1},
                }
            }
        ],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "sunny"}]}}],
    }


def test_truncated_answer_says_length(stack: Stack) -> None:
    completion = stack.openai().chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=3,
        extra_headers={"x-simulator-output-words": "20"},
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_dropped_parameters_are_listed(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=NOVA,
        messages=HELLO,
        max_completion_tokens=50,
        seed=1,
        logit_bias={"50256": -100},
        n=1,
        top_p=0.9,
        user="end-user-7",
    )
    assert sorted(raw.headers["x-langwatch-params-dropped"].split(",")) == ["logit_bias", "seed"]
    sent = stack.upstream()["json"]
    assert sent["inferenceConfig"] == {"maxTokens": 50, "topP": 0.9}
    assert sent["requestMetadata"] == {"user": "end-user-7"}


def test_http_image_url_is_a_400_naming_it(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.openai().chat.completions.create(
            model=MODEL,
            max_tokens=20,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}},
                    ],
                }
            ],
        )
    err = info.value.response.json()["error"]
    assert err["type"] == "bad_request"
    assert err["param"] == "messages[0].content[1].image_url.url"
    assert "https://img.example/cat.png" in err["message"]


# --------------------------------------------------------------------------- messages (anthropic)


def test_messages_non_stream_and_stream(stack: Stack) -> None:
    client = stack.anthropic()
    message = client.messages.create(
        model=MODEL, max_tokens=200, system="Be brief.", messages=HELLO
    )
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Hello from the Tollway simulator.")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 13
    assert message.id.startswith("msg_")
    assert stack.upstream()["json"]["system"] == [{"text": "Be brief."}]
    with client.messages.stream(
        model=MODEL, max_tokens=200, system="Be brief.", messages=HELLO
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].text == message.content[0].text  # type: ignore[union-attr]
    assert streamed.stop_reason == "end_turn"
    assert streamed.usage.output_tokens == message.usage.output_tokens


def test_messages_tool_use_and_max_tokens(stack: Stack) -> None:
    client = stack.anthropic()
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    with client.messages.stream(
        model=MODEL, max_tokens=300, messages=messages, tools=tools
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "example", "days": 1}
    follow = [
        *messages,
        {"role": "assistant", "content": [b.model_dump() for b in final.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
        },
    ]
    done = client.messages.create(model=MODEL, max_tokens=300, messages=follow, tools=tools)
    assert done.content[0].text.endswith("Received the tool result.")  # type: ignore[union-attr]
    truncated = client.messages.create(
        model=MODEL,
        max_tokens=3,
        messages=HELLO,
        extra_headers={"x-simulator-output-words": "20"},
    )
    assert truncated.stop_reason == "max_tokens"


# --------------------------------------------------------------------------- auth


def test_wrong_secret_is_a_clear_403_not_a_traceback(stack: Stack) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        stack.openai().chat.completions.create(model=WRONG_SECRET, messages=HELLO, max_tokens=5)
    response = info.value.response
    assert "The request signature we calculated does not match" in response.json()["message"]
    assert response.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    assert response.headers["x-langwatch-provider"] == "bedrock"
    assert "signature" in str(info.value)
    with pytest.raises(anthropic.PermissionDeniedError):
        stack.anthropic().messages.create(model=WRONG_SECRET, max_tokens=5, messages=HELLO)
    assert "not-the-secret" not in stack.logs()


def test_bedrock_api_key_is_sent_as_bearer(stack: Stack) -> None:
    completion = stack.openai().chat.completions.create(model=BEARER, messages=HELLO, max_tokens=50)
    assert completion.choices[0].message.content
    headers = stack.upstream()["headers"]
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert "x-amz-date" not in headers


def test_config_problems_name_the_key_and_keep_secrets_out() -> None:
    def problems(api_key: str, config: dict[str, Any]) -> list[str]:
        cfg = ProviderConfig(name="b", type="bedrock", api_key=api_key, config=config)
        return BedrockProvider(cfg).validate()

    assert problems(CREDENTIAL, REGION) == []
    assert problems("AKIDX:s3cret:tok3n", REGION) == []
    bad = problems("just-one-s3cret", {})
    assert [p.split(":")[0] for p in bad] == ["config.region", "api_key"]
    assert not any("s3cret" in p for p in bad)
    assert problems(API_KEY, {"region": "eu-west-1", "auth": "bearer"}) == []
    assert problems(CREDENTIAL, {"region": "Frankfurt"})[0].startswith("config.region")
    assert problems(CREDENTIAL, {"region": "us-east-1", "auth": "iam"})[0].startswith("config.auth")
    provider = BedrockProvider(
        ProviderConfig(name="b", type="bedrock", api_key=CREDENTIAL, config=REGION)
    )
    assert provider.base_url == "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert SECRET_ACCESS_KEY not in repr(provider)
    assert provider.native == frozenset()


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("model", [FALLBACK_500, FALLBACK_429])
def test_bedrock_500_and_429_fall_back_to_openai(stack: Stack, model: str) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=model, messages=HELLO, max_tokens=50
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-langwatch-provider"] == "openai"
    assert raw.headers["x-langwatch-fallback-count"] == "1"


def test_stream_exception_before_content_falls_back(stack: Stack) -> None:
    with stack.anthropic().messages.with_streaming_response.create(
        model=FALLBACK_EXCEPTION,
        max_tokens=50,
        messages=HELLO,
        stream=True,
        extra_headers={"x-simulator-bedrock-exception": "throttlingException:1"},
    ) as response:
        body = response.read()
        assert response.headers["x-langwatch-provider"] == "openai"
        assert response.headers["x-langwatch-fallback-count"] == "1"
    assert b"event: message_stop" in body


def test_stream_exception_before_content_without_fallback_passes_through(stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        list(
            stack.openai().chat.completions.create(
                model=MODEL,
                messages=HELLO,
                max_tokens=50,
                stream=True,
                extra_headers={"x-simulator-bedrock-exception": "throttlingException:1"},
            )
        )
    assert info.value.response.headers["x-amzn-errortype"].startswith("ThrottlingException")


def test_exception_frame_after_content_ends_with_the_terminal_error(stack: Stack) -> None:
    header = {"x-simulator-bedrock-exception": "internalServerException:4"}
    stream = stack.openai().chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=50, stream=True, extra_headers=header
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "Hello from the"
    assert "internalServerException mid-stream" in str(info.value)
    with (
        pytest.raises(anthropic.APIStatusError, match="internalServerException"),
        stack.anthropic().messages.stream(
            model=MODEL, max_tokens=50, messages=HELLO, extra_headers=header
        ) as astream,
    ):
        for _ in astream:
            pass


def test_cut_stream_ends_with_the_terminal_error(stack: Stack) -> None:
    stream = stack.openai().chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=50,
        stream=True,
        extra_headers={"x-simulator-fault": "midstream:4"},
    )
    with pytest.raises(openai.APIError, match="mid-stream"):
        for _ in stream:
            pass


def test_inference_profile_arn_travels_as_one_signed_segment(stack: Stack) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x-v1:0"
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=arn, messages=HELLO, max_tokens=20, stream=True
    )
    assert raw.headers["x-simulator-raw-path"] == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
        "us.anthropic.claude-x-v1%3A0/converse-stream"
    )
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)


def test_model_ids_map_a_client_model_to_a_bedrock_id(stack: Stack) -> None:
    """``config.model_ids``: Claude Code's ``claude-sonnet-4-5`` reaches Bedrock as its inference
    profile; the client sees the name it asked for."""
    raw = stack.anthropic().messages.with_raw_response.create(
        model=MAPPED, max_tokens=64, messages=HELLO
    )
    message = raw.parse()
    assert message.model == MAPPED and message.content[0].type == "text"
    assert raw.headers["x-langwatch-provider"] == "bedrock"
    assert raw.headers["x-simulator-raw-path"] == (
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    )
    listed = [m.id for m in stack.openai().models.list()]
    assert MAPPED in listed


def test_model_ids_problems_are_named() -> None:
    def problems(model_ids: Any) -> list[str]:
        cfg = ProviderConfig(
            name="b", type="bedrock", api_key=CREDENTIAL, config={**REGION, "model_ids": model_ids}
        )
        return BedrockProvider(cfg).validate()

    assert problems({MAPPED: MAPPED_ID}) == []
    assert problems(["claude"])[0].startswith("config.model_ids: must be a table")
    assert problems({"claude-*": MAPPED_ID})[0].startswith("config.model_ids.claude-*")
    assert problems({MAPPED: 7})[0].startswith(f"config.model_ids.{MAPPED}")
