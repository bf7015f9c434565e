"""The simulator in a subprocess: its CLI and plugin, its pure functions, faults, replay and
introspection (the wires are in test_simulator_openai.py and test_simulator_anthropic.py)."""

from __future__ import annotations

import base64
import time
from importlib import metadata

import anthropic
import click
import httpx2
import openai
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from simulator_helpers import USER, _fault, _start, _stats, _stop

from tollway_simulator import plugin
from tollway_simulator.cli import simulate
from tollway_simulator.common import (
    GREETING,
    custom_tool_input,
    example_for_schema,
    prefer_shell_tool,
    reply_words,
    tool_arguments,
)
from tollway_simulator.faults import Fault, parse_fault, parse_fault_mix, pick_fault
from tollway_simulator.fixtures import read_fixture, split_events

pytest_plugins = ["simulator_fixtures"]

# --------------------------------------------------------------------------- CLI and plugin


def test_cli_help_and_bad_fault() -> None:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--latency-ms", "--event-delay-ms", "--fault"):
        assert option in result.output
    bad = CliRunner().invoke(simulate, ["--fault", "explode"])
    assert bad.exit_code == 2
    assert "unknown fault" in bad.output


def test_plugin_registers_simulate() -> None:
    group = click.Group("tollway")
    plugin.register_commands(group)
    assert group.commands["simulate"] is simulate
    eps = metadata.entry_points(group="tollway")
    assert any(
        ep.name == "tollway-simulator" and ep.value == "tollway_simulator.plugin" for ep in eps
    )


def test_parse_fault_mix() -> None:
    mix = parse_fault_mix("500=0.3, timeout=0.1")
    assert mix == ((Fault("status", 500), 0.3), (Fault("timeout"), 0.1))
    assert pick_fault(mix, 0.0) == Fault("status", 500)
    assert pick_fault(mix, 0.35) == Fault("timeout")
    assert pick_fault(mix, 0.45) is None
    for bad, why in (
        ("500", "expected F=SHARE"),
        ("500=2", "from 0 to 1"),
        ("500=0.7,timeout=0.7", "more than 1"),
        ("bogus=0.1", "unknown fault"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_fault_mix(bad)


def test_parse_fault() -> None:
    assert parse_fault("503") == Fault("status", 503)
    assert parse_fault("429:2") == Fault("status", 429, retry_after=2)
    assert str(parse_fault("429:2")) == "429:2"
    assert parse_fault("midstream") == Fault("midstream", 3)
    assert parse_fault("midstream:7") == Fault("midstream", 7)
    assert parse_fault("slow-first-byte") == Fault("slow-first-byte", 2000)
    assert parse_fault("slow-first-byte:50") == Fault("slow-first-byte", 50)
    for spec in ("timeout", "reset", "html", "malformed-sse"):
        assert str(parse_fault(spec)) == spec
    for bad in ("200", "600", "midstream:x", "nope", "timeout:3"):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_schema_examples() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "a": {"type": "array", "items": {"type": "integer"}},
            "o": {
                "type": "object",
                "properties": {"x": {"type": ["null", "string"]}},
                "required": ["x"],
            },
            "u": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            "optional": {"type": "string"},
        },
        "required": ["s", "n", "b", "a", "o", "u"],
    }
    assert example_for_schema(schema) == {
        "s": "example",
        "n": 1,
        "b": True,
        "a": [1],
        "o": {"x": "example"},
        "u": 1,
    }


def test_shell_tool_preference_and_arguments() -> None:
    schema = {
        "type": "object",
        "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
        "required": ["command"],
    }
    tools = [{"name": "Agent"}, {"name": "Read"}, {"name": "Bash"}]
    assert prefer_shell_tool(tools)["name"] == "Bash"
    assert prefer_shell_tool([{"name": "Agent"}, {"name": "Read"}])["name"] == "Agent"
    assert tool_arguments("Bash", schema) == {"command": "echo ok"}
    assert tool_arguments("Other", schema) == {"command": "example"}
    argv = {"type": "object", "properties": {"command": {"type": "array", "items": {}}}}
    assert tool_arguments("shell", argv) == {"command": ["bash", "-lc", "echo ok"]}
    cmd = {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
    assert tool_arguments("exec_command", cmd) == {"cmd": "echo ok"}
    assert custom_tool_input("exec") == 'text("ok")'
    assert custom_tool_input("apply_patch") == "example"


@settings(database=None, deadline=None)
@given(st.text(max_size=200), st.one_of(st.none(), st.integers(1, 300)))
def test_reply_words_deterministic(text: str, words: int | None) -> None:
    first = reply_words(text, output_words=words)
    assert first == reply_words(text, output_words=words)
    joined = "".join(first)
    assert joined.startswith("Hello")
    if words is None:
        assert joined.startswith(GREETING)
    else:
        assert len(first) == words


@settings(database=None, deadline=None)
@given(st.lists(st.text(alphabet="abc: \n", max_size=20), max_size=8))
def test_split_events_keeps_bytes(parts: list[str]) -> None:
    data = "\n\n".join(parts).encode()
    events = split_events(data)
    assert b"".join(events).startswith(data)
    assert all(e.endswith(b"\n\n") for e in events)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("status", "openai_error", "anthropic_error"),
    [
        (400, openai.BadRequestError, anthropic.BadRequestError),
        (404, openai.NotFoundError, anthropic.NotFoundError),
        (429, openai.RateLimitError, anthropic.RateLimitError),
        (500, openai.InternalServerError, anthropic.InternalServerError),
        (503, openai.InternalServerError, anthropic.InternalServerError),
    ],
)
def test_status_faults(
    oai: openai.OpenAI,
    ant: anthropic.Anthropic,
    status: int,
    openai_error: type[openai.APIStatusError],
    anthropic_error: type[anthropic.APIStatusError],
) -> None:
    with pytest.raises(openai_error) as oexc:
        oai.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers=_fault(str(status))
        )
    assert oexc.value.status_code == status
    assert set(oexc.value.body) == {"message", "type", "param", "code"}  # the "error" object
    with pytest.raises(anthropic_error) as aexc:
        ant.messages.create(
            model="m", max_tokens=5, messages=USER, extra_headers=_fault(str(status))
        )
    assert aexc.value.status_code == status
    body = aexc.value.body
    assert (
        isinstance(body, dict)
        and body["type"] == "error"
        and set(body["error"]) == {"type", "message"}
    )
    if status == 429:
        assert oexc.value.response.headers["retry-after"] == "1"
        assert aexc.value.response.headers["retry-after"] == "1"


def test_429_fault_with_retry_after(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        oai.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=_fault("429:2"))
    assert exc.value.response.headers["retry-after"] == "2"


def test_fault_timeout(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers=_fault("timeout")
        )
    client.close()


def test_fault_reset(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=_fault("reset"))
    with pytest.raises(anthropic.APIConnectionError):
        ant.messages.create(model="m", max_tokens=5, messages=USER, extra_headers=_fault("reset"))


def test_fault_html(url: str, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        oai.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=_fault("html"))
    assert exc.value.status_code == 502
    raw = httpx2.post(f"{url}/v1/messages", json={}, headers=_fault("html"))
    assert raw.status_code == 502
    assert raw.headers["content-type"].startswith("text/html")
    assert b"502 Bad Gateway" in raw.content


def test_fault_midstream(url: str, oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    httpx2.post(f"{url}/_sim/reset")
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, extra_headers=_fault("midstream:2")
        ):
            received.append(chunk)
    assert len(received) == 2
    # anthropic 2.12 lets the transport error through unwrapped once the stream has started.
    dropped = (anthropic.APIConnectionError, httpx2.RemoteProtocolError)
    with (
        pytest.raises(dropped),
        ant.messages.stream(
            model="m", max_tokens=50, messages=USER, extra_headers=_fault("midstream")
        ) as stream,
    ):
        stream.get_final_message()
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers=_fault("midstream")
        )
    stats = _stats(url)
    assert stats["streams_aborted"] == 2
    assert stats["streams_completed"] == 0 and stats["active_streams"] == 0


def test_fault_slow_first_byte_and_latency(oai: openai.OpenAI) -> None:
    start = time.monotonic()
    oai.chat.completions.create(
        model="gpt-4o", messages=USER, extra_headers=_fault("slow-first-byte:300")
    )
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    oai.chat.completions.create(
        model="gpt-4o", messages=USER, extra_headers={"x-simulator-latency-ms": "200"}
    )
    assert time.monotonic() - start >= 0.2


def test_event_delay(oai: openai.OpenAI) -> None:
    start = time.monotonic()
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            stream=True,
            extra_headers={"x-simulator-event-delay-ms": "20"},
        )
    )
    assert time.monotonic() - start >= 0.02 * (len(chunks) - 1)


def test_fault_malformed_sse(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's SSE parser
        list(
            oai.chat.completions.create(
                model="gpt-4o", messages=USER, stream=True, extra_headers=_fault("malformed-sse")
            )
        )
    with (
        pytest.raises(ValueError),
        ant.messages.stream(
            model="m", max_tokens=50, messages=USER, extra_headers=_fault("malformed-sse")
        ) as s,
    ):
        s.get_final_message()


def test_bad_simulator_header(url: str) -> None:
    raw = httpx2.post(f"{url}/v1/chat/completions", json={}, headers=_fault("bogus"))
    assert raw.status_code == 400
    assert "unknown fault" in raw.json()["error"]["message"]


def test_process_wide_fault() -> None:
    proc, base_url = _start("--fault", "503", "--latency-ms", "1")
    try:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="k", max_retries=0, timeout=5)
        with pytest.raises(openai.InternalServerError) as exc:
            client.chat.completions.create(model="gpt-4o", messages=USER)
        assert exc.value.status_code == 503
        with pytest.raises(openai.RateLimitError):  # the header wins over --fault
            client.chat.completions.create(
                model="gpt-4o", messages=USER, extra_headers=_fault("429")
            )
        client.close()
    finally:
        _stop(proc)


# --------------------------------------------------------------------------- replay


def test_replay_byte_identical(url: str) -> None:
    name = "openai-chat/plain-text-stop.sse"
    raw = httpx2.post(
        f"{url}/v1/chat/completions", json={"model": "gpt-4o"}, headers={"x-simulator-replay": name}
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "text/event-stream"
    assert raw.content == read_fixture(name)


def test_replay_anthropic_fixture_through_sdk(ant: anthropic.Anthropic) -> None:
    # The recorded file lacks a final blank line; the simulator terminates the last event.
    with ant.messages.stream(
        model="m",
        max_tokens=5,
        messages=USER,
        extra_headers={"x-simulator-replay": "anthropic-messages/basic_response.sse"},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Hello there!"
    assert final.stop_reason == "end_turn"


# --------------------------------------------------------------------------- introspection


def test_client_disconnect_is_counted(url: str) -> None:
    httpx2.post(f"{url}/_sim/reset")
    headers = {"x-simulator-event-delay-ms": "20", "x-simulator-output-words": "500"}
    body = {"model": "gpt-4o", "messages": USER, "stream": True}
    with (
        httpx2.Client() as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
        assert _stats(url)["active_streams"] == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = _stats(url)
        if stats["streams_client_disconnected"] == 1:
            break
        time.sleep(0.02)
    assert stats["streams_client_disconnected"] == 1
    assert stats["active_streams"] == 0
    assert stats["streams_started"] == 1 and stats["streams_completed"] == 0


def test_recorded_requests(url: str) -> None:
    httpx2.delete(f"{url}/_sim/requests")
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}'
    httpx2.post(
        f"{url}/v1/messages?beta=true",
        content=body,
        headers={"x-api-key": "sk-ant-secret", "anthropic-version": "2023-06-01"},
    )
    auth = {"authorization": "Bearer sk-1"}
    httpx2.post(f"{url}/v1/chat/completions", content=body, headers=auth)
    recorded = httpx2.get(f"{url}/_sim/requests").json()
    assert [r["path"] for r in recorded] == ["/v1/messages", "/v1/chat/completions"]
    first = recorded[0]
    assert first["method"] == "POST" and first["query_string"] == "beta=true"
    assert base64.b64decode(first["body"]) == body
    assert ["x-api-key", "sk-ant-secret"] in first["headers"]
    assert ["authorization", "Bearer sk-1"] in recorded[1]["headers"]
    httpx2.delete(f"{url}/_sim/requests")
    assert httpx2.get(f"{url}/_sim/requests").json() == []
    stats = httpx2.post(f"{url}/_sim/reset").json()
    assert stats["requests"] == 0
