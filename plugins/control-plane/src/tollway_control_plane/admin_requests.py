"""The request explorer in the admin API: ``GET /api/admin/requests`` (filtered list, newest
first) and ``GET /api/admin/requests/{id}`` (one request by its ``grq_…`` id), behind the same
``Authorization: Bearer <token>`` as the rest of ``/api/admin`` (``requests:read``; a token
scoped to a team or project sees only its projects' requests)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from quart import Blueprint, Response, g, request

from tollway_control_plane.access import project_ids
from tollway_control_plane.auth import permission_for
from tollway_control_plane.store import DatabaseError, StoreError, ValidationError
from tollway_control_plane.traces import LIST_FILTERS, get_request, list_requests, span_store

__all__ = ["add_routes", "openapi_paths"]


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, kind: str, message: str, problems: list[str] | None = None) -> Response:
    err: dict[str, Any] = {"type": kind, "message": message}
    if problems:
        err["problems"] = problems
    return _json(status, {"error": err})


async def _run(fn: Any, *args: Any) -> Response:
    try:
        result = await asyncio.to_thread(fn, *args)
    except ValidationError as exc:
        return _error(422, "validation_error", exc.message, exc.problems)
    except StoreError as exc:
        kind = {403: "forbidden", 404: "not_found"}.get(exc.status, "error")
        return _error(exc.status, kind, exc.message)
    except DatabaseError as exc:
        return _error(503, "error", str(exc))
    return _json(200, result)


def add_routes(blueprint: Blueprint) -> None:
    """Add the routes to the admin blueprint (before it is registered on an app)."""
    from tollway_control_plane.protocol import state

    async def requests_list() -> Response:
        principal = g.principal
        filters = {k: v for k, v in request.args.items() if v != ""}
        spans = span_store(state())

        def listing() -> Any:
            principal.require("requests.list")
            projects = project_ids(state().service, principal)
            return {"data": list_requests(spans, filters, projects=projects)}

        return await _run(listing)

    async def requests_get(id: str) -> Response:
        principal = g.principal
        spans = span_store(state())

        def get() -> Any:
            principal.require("requests.get")
            return get_request(spans, id, projects=project_ids(state().service, principal))

        return await _run(get)

    blueprint.add_url_rule("/requests", "requests_list", requests_list, methods=["GET"])
    blueprint.add_url_rule("/requests/<id>", "requests_get", requests_get, methods=["GET"])


_STR = {"type": "string"}
_ERR = {"$ref": "#/components/responses/Error"}


def openapi_paths(prefix: str) -> dict[str, Any]:
    """The OpenAPI ``paths`` entries of these routes."""
    descriptions = {
        "key": "a virtual key id (vk_…)",
        "project": "a project id",
        "model": "the model the client asked for",
        "status": "ok, error, an HTTP status (429) or an error type (rate_limit_exceeded)",
        "since": "a duration back from now (30m, 1h, 2d) or an ISO-8601 time",
        "limit": "at most this many (1..1000, default 50)",
    }
    return {
        f"{prefix}/requests": {
            "get": {
                "operationId": "requests_list",
                "summary": "List recent gateway requests, newest first",
                "description": "Needs the requests:read permission; a token scoped to a team or "
                "project sees only its projects' requests.",
                "x-permission": permission_for("requests.list"),
                "tags": ["requests"],
                "parameters": [
                    {
                        "name": name,
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer"} if name == "limit" else _STR,
                        "description": descriptions[name],
                    }
                    for name in LIST_FILTERS
                ],
                "responses": {
                    "200": {
                        "description": "OK: {data: [request summary]}",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": _ERR,
                    "403": _ERR,
                    "422": _ERR,
                },
            }
        },
        f"{prefix}/requests/{{id}}": {
            "get": {
                "operationId": "requests_get",
                "summary": "One gateway request by its X-LangWatch-Request-Id (grq_…)",
                "description": "Needs the requests:read permission; another project's request "
                "is 404 to a token scoped to a team or project.",
                "x-permission": permission_for("requests.get"),
                "tags": ["requests"],
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": _STR}],
                "responses": {
                    "200": {
                        "description": "The request: attempts, latency, tokens, cost, cache, "
                        "status, model asked/served, key id and display prefix",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": _ERR,
                    "403": _ERR,
                    "404": _ERR,
                },
            }
        },
    }
