"""Gateway-authored errors: the SPEC §2 envelope, status, type, code and retry headers."""

from __future__ import annotations

import gzip
import time
import zlib

import httpx
import openai
import pytest
from conftest import Gateway, Simulator, free_port, provider_config

HELLO = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-4o", "messages": HELLO}


def post(
    gw: Gateway,
    body: bytes | dict,
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> httpx.Response:
    h = {"authorization": f"Bearer {gw.key}", "content-type": "application/json", **(headers or {})}
    if isinstance(body, dict):
        return httpx.post(gw.url + path, json=body, headers=h, timeout=20)
    return httpx.post(gw.url + path, content=body, headers=h, timeout=20)


def assert_envelope(r: httpx.Response, status: int, type_: str, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == type_
    if code:
        assert err["code"] == code
    assert err["message"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert r.headers["x-langwatch-request-id"].startswith("grq_")
    assert r.headers["x-langwatch-trace-id"]
    assert r.headers["x-langwatch-gateway-version"]
    return err


@pytest.mark.parametrize(
    "headers,code",
    [
        ({}, "missing_key"),
        ({"authorization": "Bearer lw_vk_live_01HZX"}, "malformed_key"),
        ({"authorization": "Basic abc"}, "malformed_key"),
        ({"x-api-key": "sk-proj-notavirtualkey"}, "malformed_key"),
    ],
)
def test_bad_keys_get_401(gateway: Gateway, headers: dict[str, str], code: str) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=headers)
    err = assert_envelope(r, 401, "invalid_api_key", code)
    assert r.headers["x-should-retry"] == "false"
    for value in headers.values():
        assert value.split()[-1] not in err["message"] or len(value.split()[-1]) <= 18


def test_unknown_and_mistyped_keys(gateway: Gateway) -> None:
    from tollway.keys import mint_key

    r = post(gateway, CHAT, {"authorization": f"Bearer {mint_key('live')}"})
    assert_envelope(r, 401, "invalid_api_key", "unknown_key")
    typo = gateway.key[:-5] + ("A" if gateway.key[-5] != "A" else "B") + gateway.key[-4:]
    r = post(gateway, CHAT, {"authorization": f"Bearer {typo}"})
    assert_envelope(r, 401, "invalid_api_key", "bad_checksum")


def test_sdk_sees_authentication_error(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)


@pytest.mark.parametrize(
    "body,fragment",
    [
        (b'{"model": "gpt-4o", "messages": [', "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"", "empty"),
        (b'{"messages": []}', "'model'"),
        (b'{"model": 5, "messages": []}', "'model'"),
        (b'{"model": "gpt-4o"}', "'messages'"),
        (b'{"model": "gpt-4o", "messages": [], "stream": "yes"}', "'stream'"),
    ],
)
def test_bad_bodies_get_400(gateway: Gateway, body: bytes, fragment: str) -> None:
    err = assert_envelope(post(gateway, body), 400, "bad_request")
    assert fragment in err["message"]


def test_unroutable_model_names_it(gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        gateway.openai().chat.completions.create(model="llama-3-70b", messages=HELLO)
    err = info.value.response.json()["error"]
    assert err["type"] == "model_not_allowed" and err["code"] == "model_not_routable"
    assert "llama-3-70b" in err["message"] and "openai" in err["message"]


def test_provider_qualified_model(gateway: Gateway, sim: Simulator) -> None:
    r = post(gateway, {"model": "openai/my-finetune", "messages": HELLO})
    assert r.status_code == 403  # openai's default families don't include it
    r = post(gateway, {"model": "openai/gpt-4o", "messages": HELLO})
    assert r.status_code == 200, r.text
    assert r.headers["x-langwatch-model"] == "gpt-4o"


def test_unknown_route_and_method(gateway: Gateway) -> None:
    assert_envelope(httpx.post(f"{gateway.url}/v1/nope"), 404, "not_found")
    assert_envelope(httpx.get(f"{gateway.url}/v1/chat/completions"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("path", "hint"),
    [
        ("/v1/chat/completions", "send POST /v1/chat/completions over HTTP"),
        ("/v1/messages", "send POST /v1/messages over HTTP"),
        ("/healthz", "every route is plain HTTP"),
        ("/no/such/route", "every route is plain HTTP"),
    ],
)
def test_websocket_upgrades_refused_with_426_everywhere(
    gateway: Gateway, path: str, hint: str
) -> None:
    """Not only Codex's GET /v1/responses: an upgrade anywhere gets the envelope, not a 500."""
    r = httpx.get(
        f"{gateway.url}{path}",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert_envelope(r, 426, "websocket_not_supported")
    assert hint in r.json()["error"]["message"]
    assert r.headers["x-langwatch-request-id"].startswith("grq_")


def test_gzip_body_is_decoded(gateway: Gateway) -> None:
    body = httpx.Request("POST", "/", json=CHAT).content
    r = post(gateway, gzip.compress(body), {"content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    r = post(gateway, b"not gzip", {"content-encoding": "gzip"})
    assert_envelope(r, 400, "bad_request")


@pytest.fixture(scope="module")
def small_cap(sim: Simulator, tmp_path_factory: pytest.TempPathFactory):
    from conftest import start_gateway, stop

    gw = start_gateway(
        tmp_path_factory.mktemp("cap"),
        provider_config(sim.url),
        {"SERVER_MAX_REQUEST_BODY_BYTES": "2000"},
    )
    yield gw
    stop(gw.proc)


def test_body_over_cap_is_413(small_cap: Gateway) -> None:
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}
    err = assert_envelope(post(small_cap, big), 413, "payload_too_large")
    assert "2000" in err["message"]
    with pytest.raises(openai.APIStatusError) as info:
        small_cap.openai().chat.completions.create(model="gpt-4o", messages=big["messages"])
    assert info.value.status_code == 413
    assert info.value.response.headers["x-should-retry"] == "false"


def test_compression_bomb_is_413(small_cap: Gateway) -> None:
    bomb = zlib.compress(b'{"model":"gpt-4o","messages":[' + b" " * 1_000_000 + b"]}", 9)
    assert len(bomb) < 2000
    r = post(small_cap, bomb, {"content-encoding": "deflate"})
    assert_envelope(r, 413, "payload_too_large")


def test_chunked_body_over_cap_is_413(small_cap: Gateway) -> None:
    def gen():
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(
        f"{small_cap.url}/v1/chat/completions",
        content=gen(),
        headers={"authorization": f"Bearer {small_cap.key}"},
    )
    assert_envelope(r, 413, "payload_too_large")


def test_dead_upstream_is_502(gateway_factory) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway_factory(provider_config(dead))
    t0 = time.monotonic()
    r = post(gw, CHAT)
    assert time.monotonic() - t0 < 5
    err = assert_envelope(r, 502, "provider_error")
    assert "sim-openai" in err["message"]
    assert r.headers["x-langwatch-provider"] == "openai"
    assert r.headers["x-langwatch-provider-name"] == "sim-openai"
    # The gateway answers with its own 502: every attempt made counts (the primary is broken).
    assert r.headers["x-langwatch-fallback-count"] == "1"


def test_upstream_timeout_is_504(sim: Simulator, gateway_factory) -> None:
    gw = gateway_factory(provider_config(sim.url), {"SERVER_UPSTREAM_TIMEOUT_SECONDS": "1"})
    t0 = time.monotonic()
    r = post(gw, CHAT, {"x-simulator-fault": "timeout"})
    assert 0.9 < time.monotonic() - t0 < 8
    assert_envelope(r, 504, "upstream_timeout")


@pytest.mark.parametrize(("status", "retry"), [(400, "false"), (401, "false"), (403, "false")])
def test_upstream_refusals_pass_through_marked_not_retryable(
    gateway: Gateway, status: int, retry: str
) -> None:
    """The provider's own status and body, plus ``x-should-retry: false`` (SPEC §2): the SDKs
    would otherwise not retry these anyway, but other clients learn it too."""
    r = post(gateway, CHAT, {"x-simulator-fault": str(status)})
    assert r.status_code == status
    assert r.headers["x-should-retry"] == retry
    assert r.headers["x-langwatch-provider"] == "openai"
    assert r.headers["x-simulator-fault"] == str(status)  # the upstream's headers pass too


def test_upstream_server_errors_keep_their_own_retry_signal(gateway: Gateway) -> None:
    r = post(gateway, CHAT, {"x-simulator-fault": "429"})
    assert r.status_code == 429
    assert "x-should-retry" not in r.headers and r.headers["retry-after"] == "1"


def test_html_error_page_passes_through(gateway: Gateway) -> None:
    r = post(gateway, CHAT, {"x-simulator-fault": "html"})
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-langwatch-provider"] == "openai"


def test_connection_reset_is_502(gateway: Gateway) -> None:
    r = post(gateway, CHAT, {"x-simulator-fault": "reset"})
    assert_envelope(r, 502, "provider_error")


def test_internal_headers_on_health(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/startupz").status_code == 200
    r = httpx.get(f"{gateway.url}/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
