"""Server knobs: ``SERVER_HEARTBEAT_SECONDS`` (off by default; SPEC §2: a slow non-streaming call
gets whitespace bytes so an idle-timeout load balancer does not cut it; the SDKs read the answer
as usual), ``LW_LOG_MESSAGE_BODY`` (off by default; SPEC §7: bodies in the log, debug only) and
``SERVER_GIL_SWITCH_INTERVAL_SECONDS`` (0.5 ms by default, shown in the start-up line)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tollway.testing import (
    GatewayProcess,
    Simulator,
    default_providers,
    start_gateway,
    start_simulator,
    stop,
)

HELLO = [{"role": "user", "content": "hello"}]
SLOW = {"x-simulator-latency-ms": "900"}  # three heartbeat periods


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    g = start_gateway(
        tmp_path_factory.mktemp("heartbeat"),
        env={
            "SERVER_HEARTBEAT_SECONDS": "0.25",
            "LW_LOG_MESSAGE_BODY": "1",
            "SERVER_GIL_SWITCH_INTERVAL_SECONDS": "0.002",
        },
        providers=default_providers(sim.url),
        plugins=["tollway_static_keys", "tollway_provider_openai", "tollway_provider_anthropic"],
    )
    yield g
    stop(g.proc)


def _post(gw: GatewayProcess, body: dict[str, object], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {gw.secret()}", **headers},
        timeout=10,
    )


def test_slow_call_gets_heartbeat_bytes_and_the_sdk_reads_the_answer(gw: GatewayProcess) -> None:
    raw = _post(gw, {"model": "gpt-4o-mini", "messages": HELLO}, SLOW)
    assert raw.status_code == 200
    assert raw.headers["x-langwatch-heartbeat-active"] == "true"
    assert "content-length" not in raw.headers
    assert raw.headers["x-langwatch-request-id"].startswith("grq_")
    spaces = len(raw.content) - len(raw.content.lstrip(b" "))
    assert spaces >= 2  # at 0.25, 0.5 (and 0.75) s
    assert raw.json()["choices"][0]["message"]["content"].startswith("Hello from the Tollway")

    client = gw.openai(default_headers=SLOW)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    message = gw.anthropic(default_headers=SLOW).messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=HELLO
    )
    assert message.content[0].type == "text" and message.stop_reason == "end_turn"


def test_fast_call_has_no_heartbeat(gw: GatewayProcess) -> None:
    raw = _post(gw, {"model": "gpt-4o-mini", "messages": HELLO}, {})
    assert raw.status_code == 200
    assert "x-langwatch-heartbeat-active" not in raw.headers
    assert int(raw.headers["content-length"]) == len(raw.content)
    assert raw.headers["x-langwatch-provider"] == "openai"


def test_streams_never_get_heartbeat_bytes(gw: GatewayProcess) -> None:
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HELLO, "stream": True},
        headers={"authorization": f"Bearer {gw.secret()}", **SLOW},
        timeout=10,
    ) as raw:
        body = raw.read()
    assert raw.status_code == 200
    assert "x-langwatch-heartbeat-active" not in raw.headers
    assert body.startswith(b"data: ")


def test_an_error_after_the_heartbeat_is_a_json_error_body_under_200(gw: GatewayProcess) -> None:
    """Documented: once a byte went out the status is committed; the SDKs do not raise."""
    raw = _post(
        gw,
        {"model": "gpt-4o-mini", "messages": HELLO},
        {**SLOW, "x-simulator-fault": "400"},
    )
    assert raw.status_code == 200
    assert raw.headers["x-langwatch-heartbeat-active"] == "true"
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error"


def test_an_error_before_the_first_beat_keeps_its_status(gw: GatewayProcess) -> None:
    raw = _post(gw, {"model": "gpt-4o-mini", "messages": HELLO}, {"x-simulator-fault": "400"})
    assert raw.status_code == 400
    assert "x-langwatch-heartbeat-active" not in raw.headers


def test_anthropic_client_error_under_heartbeat_is_readable(gw: GatewayProcess) -> None:
    """An Anthropic client's error under the heartbeat is the Anthropic error shape."""
    raw = httpx.post(
        f"{gw.url}/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 16, "messages": HELLO},
        headers={"x-api-key": gw.secret(), **SLOW, "x-simulator-fault": "400"},
        timeout=10,
    )
    assert raw.status_code == 200
    assert raw.json()["type"] == "error"


def test_message_bodies_logged_when_asked(gw: GatewayProcess) -> None:
    prompt = [{"role": "user", "content": "log me please zebra-4471"}]
    reply = gw.openai().chat.completions.create(model="gpt-4o-mini", messages=prompt)
    answer = reply.choices[0].message.content
    assert answer
    rid = reply._request_id  # the SDK keeps x-request-id here
    lines = [r for r in gw.log_records() if str(r.get("msg", "")).startswith("message_body")]
    mine = [str(r["msg"]) for r in lines if r.get("request_id") == rid]
    assert any("direction=request" in m and "zebra-4471" in m for m in mine), lines
    assert any("direction=response" in m and answer in m for m in mine), lines
    assert any("message_body_logging_on" in str(r.get("msg")) for r in gw.log_records())


def test_message_bodies_not_logged_by_default(
    sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    g = start_gateway(
        tmp_path_factory.mktemp("no-body-log"),
        providers=default_providers(sim.url),
        plugins=["tollway_static_keys", "tollway_provider_openai", "tollway_provider_anthropic"],
    )
    try:
        prompt = [{"role": "user", "content": "do not log me zebra-9913"}]
        g.openai().chat.completions.create(model="gpt-4o-mini", messages=prompt)
        time.sleep(0.2)
        assert "zebra-9913" not in g.logs()
        assert "message_body" not in g.logs()
        assert _started(g)["gil_switch_interval_s"] == "0.0005"
    finally:
        stop(g.proc)


def _started(g: GatewayProcess) -> dict[str, str]:
    """The ``key=value`` fields of the gateway's start-up line."""
    lines = [
        str(r["msg"]) for r in g.log_records() if str(r.get("msg")).startswith("gateway_started")
    ]
    assert len(lines) == 1, lines
    return dict(f.split("=", 1) for f in lines[0].split() if "=" in f)


def test_switch_interval_is_set_from_the_environment(gw: GatewayProcess) -> None:
    assert _started(gw)["gil_switch_interval_s"] == "0.002"


@pytest.mark.parametrize("value", ["0", "-1", "0.5", "nan"])
def test_bad_switch_interval_says_what_to_fix(value: str) -> None:
    from tollway.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as exc:
        load_settings(env={"SERVER_GIL_SWITCH_INTERVAL_SECONDS": value})
    assert "server.gil_switch_interval_seconds (SERVER_GIL_SWITCH_INTERVAL_SECONDS)" in str(
        exc.value
    )
