"""OpenAI chat clients on an Anthropic provider, end to end: the official openai SDK → the
gateway (subprocess) → the provider simulator's Anthropic wire (subprocess)."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tollway.keys import mint_key

MODEL = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Say hello to the translated lane"}]
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
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-an-image").decode()


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class Stack:
    """A simulator and a gateway with an OpenAI and an Anthropic provider and one static key."""

    def __init__(self, tmp: Path) -> None:
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "tollway_simulator", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.sim.stdout is not None
        match = re.search(r"listening on (http://\S+)", self.sim.stdout.readline())
        assert match, "the simulator did not start"
        self.sim_url = match.group(1)
        self.key = mint_key("test")
        config = tmp / "tollway.toml"
        config.write_text(
            f"""
[[providers]]
name = "sim-openai"
type = "openai"
base_url = "{self.sim_url}/v1"
api_key = "sk-upstream-openai"

[[providers]]
name = "sim-anthropic"
type = "anthropic"
base_url = "{self.sim_url}"
api_key = "sk-ant-upstream"

[[plugin.static-keys.keys]]
name = "test"
secret = "{self.key}"
"""
        )
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp / "gateway.log"
        env = {
            **os.environ,
            "ENVIRONMENT": "local",
            "TOLLWAY_DATA_DIR": str(tmp / "data"),
            "SERVER_ADDR": f"127.0.0.1:{port}",
        }
        with self.log.open("wb") as fh:
            self.gw = subprocess.Popen(
                [sys.executable, "-m", "tollway", "serve", "--config", str(config)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.gw.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/startupz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"gateway not ready:\n{self.log.read_text()}")

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0, timeout=20)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=self.key, max_retries=0, timeout=20)

    def upstream(self) -> dict[str, Any]:
        """The last request the simulator received, with its body parsed."""
        reqs = httpx.get(f"{self.sim_url}/_sim/requests", timeout=5).json()
        assert reqs, "the simulator received no request"
        req = reqs[-1]
        req["json"] = orjson.loads(base64.b64decode(req["body"]))
        req["headers"] = {k.lower(): v for k, v in req["headers"]}
        return dict(req)

    def close(self) -> None:
        _stop(self.gw)
        _stop(self.sim)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("translation-anthropic"))
    yield s
    s.close()


# --------------------------------------------------------------------------- tests


def test_non_stream_answer_matches_the_anthropic_wire(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        max_tokens=200,
    )
    completion = raw.parse()
    upstream = stack.upstream()
    native = stack.anthropic().messages.create(
        model=MODEL, max_tokens=200, system="Be brief.", messages=HELLO
    )
    assert completion.choices[0].message.content == native.content[0].text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL  # the model that answered
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == native.usage.output_tokens
    assert raw.headers["x-langwatch-provider"] == "anthropic"
    assert "x-langwatch-params-dropped" not in raw.headers
    # What reached Anthropic: its own wire, its own credential.
    assert upstream["path"] == "/v1/messages"
    assert upstream["headers"]["x-api-key"] == "sk-ant-upstream"
    assert upstream["headers"]["anthropic-version"]
    assert stack.key not in str(upstream["headers"])
    assert upstream["json"]["system"] == [{"type": "text", "text": "Be brief."}]
    assert upstream["json"]["max_tokens"] == 200
    assert upstream["json"]["messages"] == HELLO


def test_stream_matches_non_stream_with_usage_when_asked(stack: Stack) -> None:
    client = stack.openai()
    plain = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=200)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=200,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    assert chunks[-1].usage.prompt_tokens > 0
    # Without include_usage: no usage chunk.
    bare = list(
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=200, stream=True)
    )
    assert all(c.choices for c in bare) and all(c.usage is None for c in bare)


def test_tool_call_through_the_stream_helper_then_the_result(stack: Stack) -> None:
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
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "example", "days": 1}
    assert deltas, "arguments arrived as deltas"
    upstream = stack.upstream()["json"]
    assert upstream["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    # Send the result back (non-streaming): a tool_result block reaches Anthropic.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], max_tokens=300
    )
    assert answer.choices[0].message.content.endswith("Received the tool result.")  # type: ignore[union-attr]
    sent = stack.upstream()["json"]["messages"]
    assert sent[1]["content"][-1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": {"city": "example", "days": 1},
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
    }


def test_missing_max_tokens_is_a_400_naming_it(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.openai().chat.completions.create(model=MODEL, messages=HELLO)
    err = info.value.response.json()["error"]
    assert err["type"] == "bad_request" and err["param"] == "max_tokens"
    assert "max_tokens" in err["message"]
    assert info.value.response.headers["x-should-retry"] == "false"


def test_dropped_parameters_are_listed(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=HELLO,
        max_completion_tokens=50,
        seed=1,
        presence_penalty=0.5,
        logit_bias={"50256": -100},
        n=1,
        temperature=0.2,
        top_p=0.9,  # Haiku 4.5 refuses temperature and top_p together
        user="end-user-7",
    )
    dropped = raw.headers["x-langwatch-params-dropped"].split(",")
    assert sorted(dropped) == ["logit_bias", "presence_penalty", "seed", "top_p"]
    sent = stack.upstream()["json"]
    assert sent["temperature"] == 0.2 and "top_p" not in sent and "seed" not in sent
    assert sent["metadata"] == {"user_id": "end-user-7"}
    assert sent["max_tokens"] == 50


def test_images_become_image_blocks(stack: Stack) -> None:
    stack.openai().chat.completions.create(
        model=MODEL,
        max_tokens=20,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}},
                ],
            }
        ],
    )
    content = stack.upstream()["json"]["messages"][0]["content"]
    assert content[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert content[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://img.example/cat.png"},
    }


def test_mid_stream_failure_raises_in_the_openai_sdk(stack: Stack) -> None:
    stream = stack.openai().chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=200,
        stream=True,
        extra_headers={"x-simulator-fault": "midstream:5"},
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received, "what arrived before the failure reaches the client"
    assert "mid-stream" in str(info.value)


def test_upstream_errors_pass_through(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        stack.openai().chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=20,
            extra_headers={"x-simulator-fault": "500"},
        )
    assert info.value.response.json()["type"] == "error"  # Anthropic's own error body
    assert info.value.response.headers["x-langwatch-provider"] == "anthropic"


def test_recorded_anthropic_stream_reaches_the_sdk(stack: Stack) -> None:
    chunks = list(
        stack.openai().chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=20,
            stream=True,
            extra_headers={"x-simulator-replay": "anthropic-messages/basic_response.sse"},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there!"


def test_native_lane_is_untouched(stack: Stack) -> None:
    body = orjson.dumps(
        {"model": MODEL, "max_tokens": 20, "messages": HELLO, "top_k": 3, "temperature": 0.1}
    )
    r = httpx.post(
        f"{stack.url}/v1/messages",
        content=body,
        headers={"x-api-key": stack.key, "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert "x-langwatch-params-dropped" not in r.headers
    assert base64.b64decode(stack.upstream()["body"]) == body
