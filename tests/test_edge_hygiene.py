"""Input hygiene at the edge, end to end: a real gateway in front of the provider simulator.

Control characters or a huge ``model``, duplicate JSON keys and oversized header blocks are
refused with the SPEC §2 envelope **before any upstream call** (the simulator's request count
does not move), and nothing the client sent can forge a log line.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollway._input import MAX_REQUEST_HEADERS
from tollway.testing import (
    SimulatedGateway,
    Simulator,
    StaticKey,
    default_providers,
    start_simulated_gateway,
    start_simulator,
)

HELLO = [{"role": "user", "content": "hi"}]
FORGED = "12:00:00 INFO    tollway.gateway: FORGED"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedGateway]:
    """A gateway with pretty logs (where CR/LF would forge lines) and a policy on the key."""
    sim = start_simulator()
    gw = start_simulated_gateway(
        tmp_path_factory.mktemp("edge"),
        sim,
        providers=default_providers(sim.url),
        keys=[StaticKey(config={"policy_rules": {"tools": {"deny": ["^shell$"]}}})],
        env={"LOG_FORMAT": "pretty"},
    )
    yield gw
    gw.stop_all()


def upstream_calls(sim: Simulator) -> int:
    return sim.stats()["requests"]


def assert_refused(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-should-retry"] == "false"
    assert r.headers["x-langwatch-request-id"].startswith("grq_")
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code
    assert err["type"] == "bad_request"
    return err


BAD_MODELS = [
    pytest.param("gpt-4o-mini\u0000", "U+0000", id="nul"),
    pytest.param(f"gpt-4o-mini\r\n{FORGED}", "U+000D", id="crlf"),
    pytest.param("gpt-4o-" + "x" * 10_240, "10247 characters long", id="10KB"),
]


@pytest.mark.parametrize(("model", "says"), BAD_MODELS)
def test_bad_model_refused_before_upstream_openai(
    stack: SimulatedGateway, model: str, says: str
) -> None:
    before = upstream_calls(stack.sim)
    client = stack.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
    err = assert_refused(info.value.response, 400, "invalid_model")
    assert says in err["message"] and err["param"] == "model"
    assert len(err["message"]) < 400  # the value is quoted in part only
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=model, input="hi")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=model, input="hi")
    assert upstream_calls(stack.sim) == before
    logs = stack.logs()
    assert not any(line.startswith(FORGED) for line in logs.splitlines())
    assert "x" * 1000 not in logs


@pytest.mark.parametrize(("model", "says"), BAD_MODELS)
def test_bad_model_refused_before_upstream_anthropic(
    stack: SimulatedGateway, model: str, says: str
) -> None:
    before = upstream_calls(stack.sim)
    with pytest.raises(anthropic.BadRequestError) as info:
        stack.anthropic().messages.create(model=model, max_tokens=10, messages=HELLO)  # type: ignore[arg-type]
    body = info.value.response.json()
    assert body["type"] == "error" and says in body["error"]["message"]
    assert upstream_calls(stack.sim) == before


def test_good_model_still_served(stack: SimulatedGateway) -> None:
    reply = stack.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    assert reply.headers["x-langwatch-model"] == "gpt-4o-mini"


def test_duplicate_tools_key_refused_before_upstream(stack: SimulatedGateway) -> None:
    before = upstream_calls(stack.sim)
    tool = '{"type":"function","function":{"name":"shell","parameters":{"type":"object"}}}'
    raw = (
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],'
        f'"tools":[{tool}],"tools":[]}}'
    ).encode()
    r = stack.post(None, "/v1/chat/completions", raw)
    err = assert_refused(r, 400, "duplicate_key")
    assert '"tools"' in err["message"]
    # Nested, and written with an escape: the same key all the same.
    raw = (
        b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user",'
        b'"content":"hi","\\u0072ole":"assistant"}]}'
    )
    err = assert_refused(stack.post(None, "/v1/messages", raw), 400, "duplicate_key")
    assert '"role"' in err["message"]
    assert upstream_calls(stack.sim) == before
    # Without the duplicate the policy judges the tool it would forward.
    r = stack.post(None, "/v1/chat/completions", raw.replace(b',"\\u0072ole":"assistant"', b""))
    assert r.status_code == 200


def test_many_headers_refused_431(stack: SimulatedGateway) -> None:
    before = upstream_calls(stack.sim)
    # Within Hypercorn's 16 KiB head but over the count cap: the gateway's own 431.
    few = {f"x-h{i}": "1" for i in range(MAX_REQUEST_HEADERS + 50)}
    client = stack.openai(default_headers=few)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    err = assert_refused(info.value.response, 431, "request_headers_too_large")
    assert f"at most {MAX_REQUEST_HEADERS}" in err["message"]
    # 2,000 headers are over 16 KiB too: Hypercorn refuses them, with the same envelope.
    many = {f"x-header-{i}": "1" for i in range(2000)}
    client = stack.openai(default_headers=many)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert_refused(info.value.response, 431, "request_headers_too_large")
    assert upstream_calls(stack.sim) == before


def test_oversized_header_block_gets_enveloped_431(stack: SimulatedGateway) -> None:
    before = upstream_calls(stack.sim)
    # A head that arrives whole is parsed by Hypercorn whatever its size: the gateway refuses.
    r = stack.post(
        None,
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": HELLO},
        headers={"x-big": "v" * 20_000},
    )
    err = assert_refused(r, 431, "request_headers_too_large")
    assert "16384 bytes" in err["message"]
    # A head still incomplete past 16 KiB is refused by Hypercorn itself, enveloped too.
    pieces = [b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"]
    pieces += [b"x-pad-%d: %s\r\n" % (i, b"v" * 4000) for i in range(8)]
    reply = _raw_http(stack.url, *pieces)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), reply[:300]
    assert b"x-should-retry: false" in head.lower()
    doc = json.loads(body)
    assert doc["type"] == "error" and doc["error"]["code"] == "request_headers_too_large"
    assert upstream_calls(stack.sim) == before


def _raw_http(url: str, *pieces: bytes) -> bytes:
    """Send ``pieces`` on one connection, a moment apart; read until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        for piece in pieces:
            try:
                s.sendall(piece)
            except OSError:  # the server answered and closed before reading the rest
                break
            time.sleep(0.02)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_request_line_gets_enveloped_400(stack: SimulatedGateway) -> None:
    reply = _raw_http(stack.url, b"POST /v1/chat completions HTTP/1.1\r\nhost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"x-should-retry: false" in head.lower()
    err = json.loads(body)["error"]
    assert err["type"] == "bad_request" and err["code"] == "malformed_http_request"


# --- any JSON object to /v1/messages: 2xx or 4xx, never 5xx -------------------------------

_KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "max_tokens",
        "stream",
        "system",
        "tools",
        "tool_choice",
        "metadata",
        "temperature",
        "stop_sequences",
        "thinking",
        "top_k",
        "x",
    ]
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | _KEYS, inner, max_size=3)
    ),
    max_leaves=12,
)
_CONTENT = st.text(max_size=30) | st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image", "tool_use", "x"])},
        optional={"text": _JSON, "name": _JSON, "input": _JSON, "id": _JSON},
    ),
    max_size=2,
)
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool"]) | _JSON,
        "content": _CONTENT | _JSON,
    }
)
_BODY = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["claude-sonnet-4-5", "gpt-4o-mini", "sim-openai/gpt-4o"]) | _JSON,
        "messages": st.lists(_MESSAGE, max_size=3) | _JSON,
        "max_tokens": st.integers(-5, 50) | _JSON,
        "stream": st.booleans() | _JSON,
        "system": st.text(max_size=20) | _JSON,
        "tools": st.lists(st.fixed_dictionaries({"name": _JSON, "input_schema": _JSON}), max_size=2)
        | _JSON,
        "temperature": _JSON,
        "tool_choice": _JSON,
    },
) | st.dictionaries(_KEYS, _JSON, max_size=5)


@given(body=_BODY)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_messages_never_5xx(stack: SimulatedGateway, body: dict[str, Any]) -> None:
    headers = {
        "authorization": f"Bearer {stack.key}",
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
    }
    with httpx.stream(
        "POST", f"{stack.url}/v1/messages", content=json.dumps(body), headers=headers, timeout=20
    ) as r:
        r.read()
    assert r.status_code < 500, (body, r.status_code, r.text[:500])


def test_no_internal_errors_logged(stack: SimulatedGateway) -> None:
    assert "internal_error" not in stack.logs()
