"""The Quart application around the gateway: health, models listing, errors, plugin routes."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from quart import Quart, Response, has_websocket_context, request, websocket
from werkzeug.exceptions import HTTPException

from tollway._context import GEMINI, MESSAGES, MODELS
from tollway._errors import (
    BadRequest,
    GatewayError,
)
from tollway._input import MAX_MODEL_CHARS, quote_input
from tollway._intake import ENDPOINT_PATHS, GEMINI_METHODS, Intake
from tollway._logging import request_id_var
from tollway._plugins import PluginLoadError
from tollway._reply import CIHeaders, Replies, to_quart

if TYPE_CHECKING:
    from tollway._context import RequestContext
    from tollway._types import Principal
    from tollway.gateway import Gateway
    from tollway.provider import Provider

__all__ = ["ModelsListing", "create_app"]

log = logging.getLogger("tollway.gateway")


def create_app(gateway: Gateway) -> Quart:
    """The Quart application serving ``gateway``."""
    app = Quart("tollway")
    app.config.update(
        MAX_CONTENT_LENGTH=None,  # the gateway enforces its own cap, with the SPEC envelope
        RESPONSE_TIMEOUT=None,  # streams last as long as the upstream streams
        BODY_TIMEOUT=120,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.extensions["tollway"] = gateway
    gateway.app = app

    @app.before_serving
    async def _startup() -> None:
        if not gateway.started:
            await gateway.startup()

    @app.after_serving
    async def _shutdown() -> None:
        await gateway.shutdown()

    for path, endpoint in ENDPOINT_PATHS.items():

        async def view(endpoint: str = endpoint) -> Response:
            # Normally never reached: serve_asgi() answers these before Quart sees them. Kept so
            # the plain Quart app (e.g. Quart's test client) serves the same endpoints.
            headers = CIHeaders((k.lower(), v) for k, v in request.headers.items())
            reply = await gateway.handle(
                endpoint,
                request.method,
                request.path,
                request.query_string,
                headers,
                request.body.__aiter__(),
            )
            if reply.stream is None:
                gateway.finish(reply.ctx)
            return to_quart(reply)

        app.add_url_rule(path, f"v1_{endpoint}", view, methods=["POST"])

    # Codex's built-in provider first tries a WebSocket upgrade on GET /v1/responses. Refused
    # with 426 it falls back to POST /v1/responses at once and for the session; a 404, 405, 5xx
    # costs 5 reconnects (~6 s) first, and a 400 ends the Codex run (docs/codex.md).
    @app.websocket("/v1/responses")
    async def responses_websocket() -> Response:
        return _refuse_websocket(gateway, websocket.path, websocket.headers)

    @app.get("/v1/responses")
    async def responses_get() -> Response:
        # A proxy that drops the hop-by-hop Upgrade header still passes Sec-WebSocket-Key on.
        if "sec-websocket-key" in request.headers:
            return _refuse_websocket(gateway, request.path, request.headers)
        ctx = gateway.new_context("", request.method, request.path, b"", request.headers)
        return gateway.error_response(
            ctx, _MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        )

    reserved = {rule.rule for rule in app.url_map.iter_rules()}
    gateway.pm.hook.register_routes(app=app, gateway=gateway)
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("v1_") or rule.rule in reserved:
            continue
        if rule.rule.startswith("/v1/") or rule.rule in ("/healthz", "/startupz", "/readyz"):
            raise PluginLoadError(f"a plugin registered route {rule.rule}, which the core owns")

    @app.get("/v1/models")
    async def models() -> Response:
        return await gateway.list_models()

    @app.route("/v1/responses/<response_id>", methods=["GET", "DELETE"])
    async def stored_response(response_id: str) -> Response:
        return await gateway.stored_response(response_id)

    @app.post("/v1/responses/<response_id>/cancel")
    async def cancel_response(response_id: str) -> Response:
        return await gateway.stored_response(response_id)

    @app.get("/v1/responses/<response_id>/input_items")
    async def response_input_items(response_id: str) -> Response:
        return await gateway.stored_response(response_id)

    # The Google GenAI SDK calls v1beta or v1 (its default depends on its version).
    @app.post("/v1beta/models/<path:target>")
    @app.post("/v1/models/<path:target>")
    async def gemini_native(target: str) -> Response:
        # The Google GenAI SDK's own wire, raw-forwarded to Gemini / Vertex AI providers.
        if target.rpartition(":")[2] not in GEMINI_METHODS:
            ctx = gateway.new_context(GEMINI, request.method, request.path, b"", request.headers)
            return gateway.error_response(
                ctx,
                _NotFound(
                    f"no route for POST {request.path}; Tollway serves Gemini's "
                    "/v1beta/models/{model}:generateContent and :streamGenerateContent "
                    "(also under /v1)"
                ),
            )
        headers = CIHeaders((k.lower(), v) for k, v in request.headers.items())
        reply = await gateway.handle(
            GEMINI,
            "POST",
            request.path,
            request.query_string,
            headers,
            request.body.__aiter__(),
        )
        if reply.stream is None:
            gateway.finish(reply.ctx)
        return to_quart(reply)

    @app.get("/v1/models/<path:model>")
    async def model(model: str) -> Response:
        return await gateway.retrieve_model(model)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/startupz")
    async def startupz() -> Response:
        status, body = gateway.startup_status()
        return _json(status, body)

    @app.get("/readyz")
    async def readyz() -> Response:
        status, body = await gateway.readiness()
        return _json(status, body)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if has_websocket_context():
            # A WebSocket upgrade anywhere else: the same refusal, never a 500.
            return _refuse_websocket(gateway, websocket.path, websocket.headers)
        ctx = gateway.new_context("", request.method, request.path, b"", request.headers)
        anthropic = request.path.startswith("/v1/messages")
        status = exc.code or 500
        err: GatewayError
        if status == 404:
            err = _NotFound(
                f"no route for {request.method} {request.path}; Tollway serves {SERVED_ROUTES}"
            )
        elif status == 405:
            err = _MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        else:
            err = BadRequest(exc.description or "bad request")
        ctx.endpoint = MESSAGES if anthropic else ""
        return gateway.error_response(ctx, err)

    return app


#: What the 404 answer lists (docs/index.md has the same list).
SERVED_ROUTES = (
    "POST /v1/chat/completions, /v1/messages, /v1/messages/count_tokens, /v1/responses, "
    "/v1/embeddings, /v1/moderations, /v1/images/generations, /v1/audio/speech, "
    "/v1/audio/transcriptions, /v1/realtime/client_secrets; "
    "GET/DELETE /v1/responses/{id}, POST /v1/responses/{id}/cancel, "
    "GET /v1/responses/{id}/input_items, /v1/models and /v1/models/{model}; "
    "POST /v1beta/models/{model}:generateContent and :streamGenerateContent (Gemini, "
    "also under /v1)"
)


class _NotFound(GatewayError):
    type = "not_found"
    status = 404


class _MethodNotAllowed(GatewayError):
    type = "method_not_allowed"
    status = 405


class _WebSocketNotSupported(GatewayError):
    type = "websocket_not_supported"
    status = 426


def _refuse_websocket(gateway: Gateway, path: str, headers: Any) -> Response:
    """426 for a WebSocket upgrade on ``path``: clients that can (Codex) fall back to HTTP."""
    ctx = gateway.new_context("", "GET", path, b"", headers)
    if path == "/v1/responses":
        message = (
            f"Tollway does not serve WebSocket on {path}; send POST {path} (streaming with "
            '"stream": true). Codex falls back to it by itself; a model_providers entry with '
            'wire_api = "responses" skips the WebSocket attempt'
        )
    elif path in ENDPOINT_PATHS:
        message = f"Tollway does not serve WebSocket on {path}; send POST {path} over HTTP"
    else:
        message = (
            f"Tollway serves no WebSocket (asked on {path}); every route is plain HTTP, "
            'model calls stream as server-sent events with "stream": true'
        )
    return gateway.error_response(
        ctx, _WebSocketNotSupported(message, code="websocket_not_supported")
    )


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


class ModelsListing(Intake, Replies):
    """``GET /v1/models``: what a key can route to, through ``filter_models``."""

    def chain(
        self, principal: Principal | None, endpoint: str | None = None
    ) -> list[tuple[Provider, str | None]]:
        raise NotImplementedError  # the Gateway's

    async def _visible_models(
        self, ctx: RequestContext, model: str | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """What a call with this key can route to: its chain (routing policy, inherited and
        config-file providers, as for a call), a pinned model as itself; then ``filter_models``.
        With ``model``: just that model, when a provider of the chain serves it (a glob such as
        ``gpt-*`` serves more than the listing shows)."""
        await self.authenticate(ctx)
        owners: dict[str, str] = {}
        for p, pinned in self.chain(ctx.principal):
            if model is not None:
                if pinned == model or (pinned is None and p.serves(model)):
                    owners.setdefault(model, p.type)
                continue
            for m in (pinned,) if pinned is not None else p.models():
                owners.setdefault(m, p.type)
        models = list(owners)
        await self.hooks.filter_models(ctx, models)
        return models, owners

    async def list_models(self) -> Response:
        ctx = self.new_context(MODELS, "GET", request.path, request.query_string, request.headers)
        token = request_id_var.set(ctx.request_id)
        self.in_flight += 1
        try:
            models, owners = await self._visible_models(ctx)
            created = int(time.time())
            data = [
                {"id": m, "object": "model", "created": created, "owned_by": owners.get(m, "")}
                for m in models
            ]
            return self._json_reply(ctx, {"object": "list", "data": data})
        except GatewayError as exc:
            return self.error_response(ctx, exc)
        finally:
            self.finish(ctx)
            request_id_var.reset(token)

    async def retrieve_model(self, model: str) -> Response:
        """``GET /v1/models/{model}``: the model as the key sees it (404 when the key's
        listing does not show it, the same answer as for a model that does not exist)."""
        ctx = self.new_context(MODELS, "GET", request.path, request.query_string, request.headers)
        token = request_id_var.set(ctx.request_id)
        self.in_flight += 1
        try:
            models, owners = await self._visible_models(ctx, model)
            ctx.model = model
            if model not in models:
                raise _NotFound(
                    f"model {quote_input(model, MAX_MODEL_CHARS)} is not available to this key; "
                    "GET /v1/models lists the models it can use",
                    code="model_not_found",
                    param="model",
                )
            return self._json_reply(
                ctx,
                {
                    "id": model,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": owners.get(model, ""),
                },
            )
        except GatewayError as exc:
            return self.error_response(ctx, exc)
        finally:
            self.finish(ctx)
            request_id_var.reset(token)

    def _json_reply(self, ctx: RequestContext, body: Any) -> Response:
        ctx.status = 200
        return Response(
            orjson.dumps(body),
            status=200,
            headers=self.base_headers(ctx),
            content_type="application/json",
        )
