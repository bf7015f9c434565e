"""The admin REST API: ``/api/admin/…`` JSON CRUD over :data:`~tollway_control_plane.service.
OPERATIONS`, behind ``Authorization: Bearer <token>``: the bootstrap ``TOLLWAY_ADMIN_TOKEN``
(the super-user) or an API token (``lw_at_…``, permissions at a scope; see
:mod:`tollway_control_plane.auth` and :mod:`tollway_control_plane.access`).

Without ``TOLLWAY_ADMIN_TOKEN`` only API tokens minted against the store work (every other
call 401, saying so). ``GET /api/admin/openapi.json`` (no token needed) describes it, each
operation with the permission it needs (``x-permission``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from quart import Blueprint, Response, g, request

from tollway_control_plane._crypto import CredentialError
from tollway_control_plane.admin_requests import add_routes as add_request_routes
from tollway_control_plane.admin_requests import openapi_paths as request_paths
from tollway_control_plane.auth import TOKEN_PREFIX, authenticate, permission_for
from tollway_control_plane.protocol import BodyTooLarge, read_body, state
from tollway_control_plane.service import OPERATIONS, Operation
from tollway_control_plane.store import DatabaseError, StoreError, ValidationError
from tollway_control_plane.validation import ID_PATTERN, MAX_ID, request_schema

__all__ = ["PREFIX", "blueprint", "openapi"]

PREFIX = "/api/admin"
MAX_ADMIN_BODY_BYTES = 1024 * 1024
blueprint = Blueprint("tollway_control_plane_admin", __name__, url_prefix=PREFIX)

_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
}


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str, problems: list[str] | None = None) -> Response:
    err: dict[str, Any] = {"type": _ERROR_TYPES.get(status, "error"), "message": message}
    if problems:
        err["problems"] = problems
    return _json(status, {"error": err})


@blueprint.before_request
async def _authorize() -> Response | None:
    if request.path == f"{PREFIX}/openapi.json":
        return None
    cp = state()
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip() if scheme.lower() == "bearer" else ""
    try:
        principal = await asyncio.to_thread(authenticate, cp.admin_token, presented, store=cp.store)
    except DatabaseError as exc:
        return _error(503, str(exc))
    if principal is None:
        return _error(401, _unauthorized_message(cp.admin_token, presented))
    g.principal = principal
    return None


def _unauthorized_message(admin_token: str | None, presented: str) -> str:
    if presented.startswith(TOKEN_PREFIX):
        return (
            f"the API token {presented[:12]}… is unknown, revoked or expired; "
            "`tollway api-tokens list` shows each token's status — create a new one with "
            "`tollway api-tokens create`"
        )
    if not admin_token:
        return (
            "the admin API is off for anything but API tokens: TOLLWAY_ADMIN_TOKEN is not set "
            "on the control plane. Set it (the bootstrap super-user), or mint an API token "
            "against this store with `tollway api-tokens create --scope … --permissions …`, "
            "then send 'Authorization: Bearer <token>'"
        )
    return (
        "send the admin token or an API token as 'Authorization: Bearer <token>' "
        "(TOLLWAY_ADMIN_TOKEN, or a lw_at_… secret from `tollway api-tokens create`)"
    )


def _view(op: Operation) -> Any:
    async def view(**kwargs: str) -> Response:
        body: Any = None
        if op.body:
            try:
                raw = await read_body(MAX_ADMIN_BODY_BYTES)
            except BodyTooLarge:
                return _error(413, f"the body is over {MAX_ADMIN_BODY_BYTES} bytes")
            if raw.strip():
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    return _error(400, f"the body is not valid JSON: {exc}")
        try:
            result = await asyncio.to_thread(
                state().service.call, op.name, kwargs.get("id"), body, principal=g.principal
            )
        except ValidationError as exc:
            return _error(422, exc.message, exc.problems)
        except StoreError as exc:
            return _error(exc.status, exc.message)
        except (DatabaseError, CredentialError) as exc:
            return _error(503, str(exc))
        return _json(op.status, result)

    view.__name__ = op.name.replace(".", "_")
    return view


for _op in OPERATIONS:
    blueprint.add_url_rule(
        _op.path.replace("{id}", "<id>"),
        _op.name.replace(".", "_"),
        _view(_op),
        methods=[_op.method],
    )


add_request_routes(blueprint)


@blueprint.get("/openapi.json")
async def openapi_document() -> Response:
    return _json(200, openapi())


# --- OpenAPI ----------------------------------------------------------------------------------


def permission_sentence(name: str) -> str:
    """The sentence an operation's OpenAPI description says its permission with."""
    needed = permission_for(name)
    if needed is None:
        return "Any valid token may call this."
    return (
        f"Needs the {needed} permission; an API token scoped to a team or project sees and "
        "changes only what is in its scope."
    )


_STR = {"type": "string"}
_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID, "pattern": ID_PATTERN},
}
#: After a create, the record's id feeds these operations (OpenAPI links: a fuzzer follows them).
_LINKED = ("get", "update", "delete", "rotate", "revoke", "disable", "enable", "reset")


def _links(op: Operation) -> dict[str, Any]:
    resource = op.name.split(".")[0]
    links = {}
    for other in OPERATIONS:
        verb = other.name.split(".")[1]
        if other.name.startswith(f"{resource}.") and other.has_id and verb in _LINKED:
            links[verb] = {
                "operationId": other.name.replace(".", "_"),
                "parameters": {"id": "$response.body#/id"},
            }
    return links


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin API."""
    from tollway_control_plane import __version__

    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": op.name.replace(".", "_"),
            "summary": op.summary,
            "description": permission_sentence(op.name),
            "x-permission": permission_for(op.name),
            "tags": [op.name.split(".")[0]],
            "responses": {
                str(op.status): {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
                },
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
                "422": {"$ref": "#/components/responses/Error"},
            },
        }
        if op.has_id:
            entry["parameters"] = [_ID_PARAM]
        if op.body:
            entry["requestBody"] = {
                "required": op.method == "POST",
                "content": {"application/json": {"schema": request_schema(op.name)}},
            }
            for status in ("400", "413"):
                entry["responses"][status] = {"$ref": "#/components/responses/Error"}
        if op.name.endswith(".create") and op.name != "scopes.create":
            entry["responses"][str(op.status)]["links"] = _links(op)
        paths.setdefault(PREFIX + op.path, {})[op.method.lower()] = entry
    paths.update(request_paths(PREFIX))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tollway control plane admin API",
            "version": __version__,
            "description": "Virtual keys, model providers, routing policies, budgets, and the "
            "request explorer (gateway requests by their X-LangWatch-Request-Id). "
            "Secrets (a key's secret) are returned once, by create and rotate; provider "
            "credentials are write-only (shown masked).",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "TOLLWAY_ADMIN_TOKEN (everything) or an API token (lw_at_…: "
                    "its permissions, in its scope)",
                }
            },
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "error": {
                                        "type": "object",
                                        "properties": {
                                            "type": _STR,
                                            "message": _STR,
                                            "problems": {"type": "array", "items": _STR},
                                        },
                                    }
                                },
                            }
                        }
                    },
                }
            },
        },
    }
