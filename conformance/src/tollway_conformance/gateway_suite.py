"""The black-box gateway suite: the SPEC §2 contract, seen from the official SDKs.

It needs nothing but a running gateway, a key and a model the key may use, so it checks any
deployment::

    pytest --pyargs tollway_conformance.test_deployment \\
        --tollway-url https://gateway.internal --tollway-key lw_vk_live_… --tollway-model gpt-4o

or, in your own tests, a subclass of :class:`GatewaySuite` (with the ``tollway_target`` fixture
overridden to start a gateway, or the options above). Every check sends at most a couple of
short requests; none needs a particular provider behind the gateway.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
import pytest

from tollway.keys import mint_key
from tollway_conformance.harness import Target
from tollway_conformance.wire import PATHS, auth_headers, frame_problems, parse_sse, request_body

__all__ = ["GatewaySuite"]

_REQUEST_ID = re.compile(r"^grq_[0-9A-HJKMNP-TV-Z]{26}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _headers_problems(resp: httpx.Response, *, routed: bool) -> list[str]:
    """What is missing from the headers every answer (success or error) carries."""
    h = resp.headers
    problems = []
    rid = h.get("x-langwatch-request-id", "")
    if not _REQUEST_ID.match(rid):
        problems.append(f"X-LangWatch-Request-Id {rid!r} is not grq_ + a ULID")
    for alias in ("x-request-id", "x-langwatch-gateway-request-id"):
        if h.get(alias) != rid:
            problems.append(f"{alias} {h.get(alias)!r} differs from X-LangWatch-Request-Id")
    if not _HEX32.match(h.get("x-langwatch-trace-id", "")):
        problems.append(f"X-LangWatch-Trace-Id {h.get('x-langwatch-trace-id')!r}: 32 hex digits")
    if not _HEX16.match(h.get("x-langwatch-span-id", "")):
        problems.append(f"X-LangWatch-Span-Id {h.get('x-langwatch-span-id')!r}: 16 hex digits")
    if not h.get("x-langwatch-gateway-version"):
        problems.append("no X-LangWatch-Gateway-Version")
    if routed:
        for name in ("x-langwatch-provider", "x-langwatch-model"):
            if not h.get(name):
                problems.append(f"a routed call has no {name}")
        if not (h.get("x-langwatch-fallback-count") or "").isdigit():
            problems.append(
                f"X-LangWatch-Fallback-Count {h.get('x-langwatch-fallback-count')!r} is not a "
                "whole number"
            )
    return problems


def _envelope(
    resp: httpx.Response, status: int, type_: str, code: str | None = None
) -> dict[str, Any]:
    """Check the SPEC error envelope; return its ``error`` object."""
    assert resp.status_code == status, (
        f"expected {status} {type_}, got {resp.status_code}: {resp.text[:300]}"
    )
    doc = resp.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), (
        f"the error body must be {{'error': {{type, code, message, param}}}}: {resp.text[:300]}"
    )
    err: dict[str, Any] = doc["error"]
    assert set(err) >= {"type", "code", "message", "param"}, f"error fields: {sorted(err)}"
    assert err["type"] == type_, f"error type {err['type']!r}, expected {type_!r}"
    if code is not None:
        assert err["code"] == code, f"error code {err['code']!r}, expected {code!r}"
    assert isinstance(err["message"], str) and err["message"], "the error message is empty"
    assert err["param"] is None or isinstance(err["param"], str)
    problems = _headers_problems(resp, routed=False)
    assert not problems, "error response headers: " + "; ".join(problems)
    if status in (400, 401, 402, 403, 413):
        assert resp.headers.get("x-should-retry") == "false", (
            f"a {status} must carry x-should-retry: false (retrying cannot fix it)"
        )
    return err


class GatewaySuite:
    """Subclass it (or run ``tollway_conformance.test_deployment``) with the ``tollway_target``
    fixture pointing at a running gateway."""

    def _post(
        self, t: Target, fmt: str, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
        return httpx.post(
            t.url + PATHS[fmt],
            headers={
                **auth_headers(fmt, t.key),
                "content-type": "application/json",
                **(headers or {}),
            },
            timeout=60,
            **kw,
        )

    # --- success ---------------------------------------------------------------------------

    def test_models_list(self, tollway_target: Target) -> None:
        """``GET /v1/models`` answers the OpenAI list shape (the openai SDK parses it)."""
        models = tollway_target.openai().models.list()
        ids = [m.id for m in models.data]
        assert all(isinstance(i, str) and i for i in ids), ids

    def test_chat_with_openai_sdk(self, tollway_target: Target) -> None:
        """A chat completion through the openai SDK, with the gateway's headers."""
        t = tollway_target
        raw = t.openai().chat.completions.with_raw_response.create(
            model=t.model,
            messages=[{"role": "user", "content": "Say hello."}],
            max_completion_tokens=64,
        )
        reply = raw.parse()
        assert reply.choices and reply.choices[0].message.content is not None
        problems = _headers_problems(raw.http_response, routed=True)
        assert not problems, "success headers: " + "; ".join(problems)

    def test_messages_with_anthropic_sdk(self, tollway_target: Target) -> None:
        """A message through the anthropic SDK (translated if the provider speaks OpenAI)."""
        t = tollway_target
        raw = t.anthropic().messages.with_raw_response.create(
            model=t.model, max_tokens=64, messages=[{"role": "user", "content": "Say hello."}]
        )
        reply = raw.parse()
        assert reply.type == "message" and reply.content is not None
        problems = _headers_problems(raw.http_response, routed=True)
        assert not problems, "success headers: " + "; ".join(problems)

    @pytest.mark.parametrize("fmt", ["chat", "messages"])
    def test_stream_frames(self, tollway_target: Target, fmt: str) -> None:
        """Streams: ``text/event-stream``, ``Cache-Control: no-cache``, the gateway's headers,
        and the framing the SDK of the format needs (``[DONE]``; ``event:`` lines and
        ``message_stop``)."""
        t = tollway_target
        with httpx.stream(
            "POST",
            t.url + PATHS[fmt],
            json=request_body(fmt, t.model, "Say hello.", stream=True, max_tokens=64),
            headers=auth_headers(fmt, t.key),
            timeout=60,
        ) as resp:
            raw = resp.read()
        assert resp.status_code == 200, raw[:300]
        assert resp.headers.get("content-type", "").startswith("text/event-stream")
        assert resp.headers.get("cache-control") == "no-cache", (
            "a stream must carry Cache-Control: no-cache, got "
            f"{resp.headers.get('cache-control')!r}"
        )
        problems = _headers_problems(resp, routed=True)
        problems += frame_problems(fmt, parse_sse(raw))
        assert not problems, f"the {fmt} stream:\n  " + "\n  ".join(problems)

    def test_streams_through_the_sdks(self, tollway_target: Target) -> None:
        """Both SDKs consume a stream to its end without an error."""
        t = tollway_target
        text = ""
        for chunk in t.openai().chat.completions.create(
            model=t.model,
            messages=[{"role": "user", "content": "Say hello."}],
            max_completion_tokens=64,
            stream=True,
        ):
            for choice in chunk.choices:
                text += choice.delta.content or ""
        with t.anthropic().messages.stream(
            model=t.model, max_tokens=64, messages=[{"role": "user", "content": "Say hello."}]
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason is not None

    def test_trace_context_is_continued(self, tollway_target: Target) -> None:
        """A caller's ``traceparent`` is continued: ``X-LangWatch-Trace-Id`` is its trace id."""
        t = tollway_target
        trace_id = secrets.token_hex(16)
        resp = self._post(
            t,
            "chat",
            request_body("chat", t.model, "Say hello.", max_tokens=16),
            {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        )
        assert resp.status_code == 200, resp.text[:300]
        assert resp.headers.get("x-langwatch-trace-id") == trace_id

    # --- errors ----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "headers,code",
        [
            ({}, "missing_key"),
            ({"authorization": "Bearer sk-not-a-virtual-key"}, "malformed_key"),
            ({"authorization": f"Bearer {mint_key('live')}"}, "unknown_key"),
        ],
        ids=["missing", "malformed", "unknown"],
    )
    def test_bad_key(self, tollway_target: Target, headers: dict[str, str], code: str) -> None:
        """A missing, malformed or unknown key: 401 ``invalid_api_key`` with its code."""
        t = tollway_target
        resp = httpx.post(
            t.url + PATHS["chat"],
            json=request_body("chat", t.model, "hi"),
            headers=headers,
            timeout=30,
        )
        _envelope(resp, 401, "invalid_api_key", code)

    def test_bad_key_through_the_sdks(self, tollway_target: Target) -> None:
        """Both SDKs raise their ``AuthenticationError``; ``/v1/messages`` errors carry the
        top-level ``"type": "error"`` Anthropic clients look for."""
        import anthropic
        import openai

        t = tollway_target
        key = mint_key("live")
        with pytest.raises(openai.AuthenticationError):
            t.openai(api_key=key).chat.completions.create(
                model=t.model, messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(anthropic.AuthenticationError) as info:
            t.anthropic(api_key=key).messages.create(
                model=t.model, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
        body = info.value.response.json()
        assert body.get("type") == "error", f"/v1/messages error without type=error: {body}"
        assert body["error"]["type"] == "invalid_api_key"

    def test_malformed_json(self, tollway_target: Target) -> None:
        """A body that is not JSON: 400 ``bad_request`` saying so."""
        t = tollway_target
        resp = self._post(t, "chat", b'{"model": "x", "messages": [')
        err = _envelope(resp, 400, "bad_request")
        assert "JSON" in err["message"], err["message"]

    def test_unknown_model(self, tollway_target: Target) -> None:
        """A model no provider serves: 403 ``model_not_allowed``/``model_not_routable``,
        naming the model; the openai SDK raises ``PermissionDeniedError``."""
        import openai

        t = tollway_target
        model = f"conformance-no-such-model-{secrets.token_hex(3)}"
        resp = self._post(t, "chat", request_body("chat", model, "hi"))
        err = _envelope(resp, 403, "model_not_allowed", "model_not_routable")
        assert model in err["message"], f"the message must name the model: {err['message']}"
        with pytest.raises(openai.PermissionDeniedError):
            t.openai().chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
