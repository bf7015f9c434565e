"""The Google Vertex AI wire: Gemini and Anthropic models on Vertex, and an OAuth2 token endpoint.

Routes (``{m}`` = ``/v1/projects/{project}/locations/{location}/publishers``)::

    POST /token                                        (OAuth2 JWT-bearer grant)
    POST {m}/google/models/{model}:generateContent
    POST {m}/google/models/{model}:streamGenerateContent?alt=sse
    POST {m}/anthropic/models/{model}:rawPredict
    POST {m}/anthropic/models/{model}:streamRawPredict

``/token`` takes ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and an
``assertion`` that must be a JWT (RS256 header; ``iss``, ``aud``, ``exp`` claims — decoded, its
signature is not checked) and answers ``{"access_token": "ya29.sim-…", "expires_in": 3600,
"token_type": "Bearer"}``. A service account whose ``client_email`` contains ``refused`` gets
401 ``unauthorized_client`` (a key Google no longer accepts). The model routes need
``Authorization: Bearer ya29.sim-…`` (else Google's 401 ``UNAUTHENTICATED``). Gemini models
answer as the Gemini wire does (:mod:`tollway_simulator.gemini_wire`); Anthropic models take the
Messages body without ``model`` and with ``"anthropic_version": "vertex-2023-10-16"`` and answer
as the Anthropic wire does (Anthropic-shaped errors).
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from tollway_simulator import anthropic_wire, gemini_wire
from tollway_simulator.common import Call, JsonReply, Reply, b62_id, dumps
from tollway_simulator.errors import error_reply

if TYPE_CHECKING:
    from tollway_simulator.server import Simulator

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ANTHROPIC_VERSION = "vertex-2023-10-16"
TOKEN_PREFIX = "ya29.sim-"
TOKEN_LIFETIME_S = 3600
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def _oauth_error(status: int, error: str, description: str) -> JsonReply:
    return JsonReply(
        status,
        dumps({"error": error, "error_description": description}),
        {"cache-control": "no-cache, no-store, max-age=0, must-revalidate"},
    )


def _b64json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return orjson.loads(base64.urlsafe_b64decode(padded))


def token(call: Call) -> Reply:
    """The OAuth2 token endpoint (JWT-bearer grant)."""
    try:
        form = parse_qs(call.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        form = {}
    grant = (form.get("grant_type") or [""])[0]
    if grant != JWT_BEARER:
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
    assertion = (form.get("assertion") or [""])[0]
    try:
        header_b64, claims_b64, signature = assertion.split(".")
        header, claims = _b64json(header_b64), _b64json(claims_b64)
    except (ValueError, orjson.JSONDecodeError):
        return _oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token")
    if not isinstance(header, dict) or header.get("alg") != "RS256" or not signature:
        return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
    if not isinstance(claims, dict) or not all(k in claims for k in ("iss", "aud", "exp")):
        return _oauth_error(400, "invalid_grant", "Invalid JWT: missing claims")
    if not isinstance(claims["exp"], int) or claims["exp"] < time.time():
        return _oauth_error(
            400,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.",
        )
    if "refused" in str(claims["iss"]):
        return _oauth_error(
            401,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not "
            "authorized for any of the scopes requested.",
        )
    body = {
        "access_token": TOKEN_PREFIX + b62_id("", 40),
        "expires_in": TOKEN_LIFETIME_S,
        "token_type": "Bearer",
    }
    return JsonReply(200, dumps(body), {"cache-control": "no-cache, no-store"})


def _authorized(request: web.Request) -> bool:
    auth = request.headers.get("authorization", "")
    return auth.startswith("Bearer " + TOKEN_PREFIX)


def raw_predict(call: Call, model: str) -> Reply:
    """Anthropic Messages on Vertex: no ``model`` in the body, ``anthropic_version`` required."""
    req = call.data
    if "model" in req:
        return error_reply("anthropic", 400, "model: Extra inputs are not permitted")
    version = req.get("anthropic_version")
    if version != ANTHROPIC_VERSION:
        return error_reply(
            "anthropic", 400, f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'"
        )
    data = {k: v for k, v in req.items() if k != "anthropic_version"}
    data["model"] = model
    return anthropic_wire.messages(
        Call(
            body=call.body,
            data=data,
            headers=call.headers,
            memory=call.memory,
            output_words=call.output_words,
            tool_override=call.tool_override,
        )
    )


def add_routes(sim: Simulator, router: web.UrlDispatcher) -> None:
    """Add this wire's routes to the simulator's router."""

    async def handle_token(request: web.Request) -> web.StreamResponse:
        return await sim.serve(request, gemini_wire.FLAVOR, token, parse_json=False)

    async def handle_google(request: web.Request) -> web.StreamResponse:
        model, method = gemini_wire.split_target(request.match_info["target"])
        authorized = _authorized(request)
        sse = request.query.get("alt") == "sse"

        def build(call: Call) -> Reply:
            if not authorized:
                return gemini_wire.google_error(401, UNAUTHENTICATED)
            if method == "generateContent":
                return gemini_wire.generate_content(call, model, stream=False)
            if method == "streamGenerateContent":
                return gemini_wire.generate_content(call, model, stream=True, sse=sse)
            return gemini_wire.google_error(404, f"Method {method!r} is not served")

        return await sim.serve(request, gemini_wire.FLAVOR, build)

    async def handle_anthropic(request: web.Request) -> web.StreamResponse:
        model, method = gemini_wire.split_target(request.match_info["target"])
        authorized = _authorized(request)

        def build(call: Call) -> Reply:
            if not authorized:
                return gemini_wire.google_error(401, UNAUTHENTICATED)
            if method not in ("rawPredict", "streamRawPredict"):
                return gemini_wire.google_error(404, f"Method {method!r} is not served")
            return raw_predict(call, model)

        return await sim.serve(request, "anthropic", build)

    prefix = "/v1/projects/{project}/locations/{location}/publishers"
    router.add_post("/token", handle_token)
    router.add_post(prefix + "/google/models/{target}", handle_google)
    router.add_post(prefix + "/anthropic/models/{target}", handle_anthropic)


__all__ = ["ANTHROPIC_VERSION", "JWT_BEARER", "TOKEN_PREFIX", "add_routes", "raw_predict", "token"]
