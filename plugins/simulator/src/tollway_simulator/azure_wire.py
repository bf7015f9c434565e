"""The Azure OpenAI wire: the OpenAI wire at deployment URLs, with ``api-version`` and
``api-key``.

Routes (all ``POST``):

- ``/openai/deployments/{deployment}/chat/completions?api-version=V``
- ``/openai/deployments/{deployment}/embeddings?api-version=V``
- ``/openai/v1/responses`` (v1 GA; ``api-version`` absent, ``preview`` or ``latest``) and
  ``/openai/responses?api-version=V`` (dated preview versions): the body's ``model`` names the
  deployment.

Azure checks, in this order: a key (``api-key``, or ``Authorization: Bearer`` for Entra) →
401; ``api-version`` missing or not a ``YYYY-MM-DD[-preview]`` date on a deployment route → 404
"Resource not found"; a deployment whose name starts with ``missing-`` → 404
``DeploymentNotFound``. The answer is the OpenAI wire's (``openai_wire``), with the deployment
name as ``model`` (real Azure reports the deployed model's name and version there), Azure's
``prompt_filter_results`` / ``content_filter_results`` on complete chat answers and Azure's
response headers. ``x-simulator-azure-filter-chunk: 1`` starts chat streams with Azure's
``prompt_filter_results`` chunk (``"object": ""``, ``choices: []``). Status faults use
Azure's error shapes: ``400`` is a ``content_filter`` refusal, ``404`` ``DeploymentNotFound``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tollway_simulator import openai_wire
from tollway_simulator.common import Call, JsonReply, Reply, StreamReply, dumps, sse_data
from tollway_simulator.errors import ErrorFlavor, openai_error_body, register_flavor

if TYPE_CHECKING:
    from tollway_simulator.server import Simulator

FLAVOR = "azure"
#: Deployments whose name starts with this do not exist (404 ``DeploymentNotFound``).
MISSING_PREFIX = "missing-"
H_FILTER_CHUNK = "x-simulator-azure-filter-chunk"
_DATED_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_V1_VERSIONS = ("preview", "latest")

_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
_DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment "
    "within the last 5 minutes, please wait a moment and try again."
)
_FILTER_CATEGORIES = ("hate", "self_harm", "sexual", "violence")


def _error(code: str, message: str) -> bytes:
    return dumps({"error": {"code": code, "message": message}})


def _safe_filter() -> dict[str, Any]:
    return {name: {"filtered": False, "severity": "safe"} for name in _FILTER_CATEGORIES}


def _content_filter_body() -> bytes:
    verdict: dict[str, Any] = _safe_filter()
    verdict["jailbreak"] = {"filtered": True, "detected": True}
    return dumps(
        {
            "error": {
                "message": "The prompt was filtered by the Azure OpenAI content management "
                "policy (simulated). Modify the prompt and retry.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": verdict,
                },
            }
        }
    )


def _fault_body(status: int) -> bytes:
    if status == 400:
        return _content_filter_body()
    if status == 401:
        return _error("401", _ACCESS_DENIED)
    if status == 404:
        return _error("DeploymentNotFound", _DEPLOYMENT_NOT_FOUND)
    if status == 429:
        return _error(
            "429",
            "Requests to the ChatCompletions_Create Operation have exceeded the rate limit of "
            "your current pricing tier (simulated). Please retry after 1 second.",
        )
    if status >= 500:
        return _error(
            "InternalServerError",
            "The service is temporarily unable to process your request (simulated).",
        )
    return _error(str(status), f"HTTP {status} (simulated)")


def _body(status: int, message: str, type_: str) -> bytes:
    # Validation errors come from the OpenAI engine behind Azure: OpenAI's shape.
    return openai_error_body(message, type_)


def azure_headers() -> dict[str, str]:
    """Per-response headers as Azure OpenAI sends them (a fresh request id each time)."""
    request_id = str(uuid.uuid4())
    return {
        "apim-request-id": request_id,
        "x-request-id": request_id,
        "x-ms-region": "Sweden Central",
        "x-ms-rai-invoked": "true",
        "azureml-model-session": "d001-20250101000000",
        "x-ratelimit-remaining-requests": "999",
        "x-ratelimit-remaining-tokens": "999000",
    }


register_flavor(
    FLAVOR,
    ErrorFlavor(
        body=_body,
        fault_body=_fault_body,
        headers=azure_headers,
    ),
)


# --------------------------------------------------------------------------- checks


def _reply(status: int, body: bytes) -> JsonReply:
    return JsonReply(status, body, azure_headers())


def _refusal(call: Call, version: str | None, *, versioned: bool) -> JsonReply | None:
    """Azure's 401 (no key) or 404 (no/unknown api-version) for this call, if any."""
    auth = call.headers.get("authorization", "")
    if not call.headers.get("api-key") and not (
        auth.lower().startswith("bearer ") and auth[7:].strip()
    ):
        return _reply(401, _error("401", _ACCESS_DENIED))
    if versioned and (version is None or not _DATED_VERSION.fullmatch(version)):
        return _reply(404, _error("404", "Resource not found"))
    return None


def _missing_deployment(deployment: str) -> JsonReply | None:
    if deployment.startswith(MISSING_PREFIX):
        return _reply(404, _error("DeploymentNotFound", _DEPLOYMENT_NOT_FOUND))
    return None


def _as_deployment(call: Call, deployment: str) -> Call:
    """The call as the OpenAI builders see it: ``model`` = the deployment."""
    data = {**call.data, "model": deployment}
    return Call(
        body=call.body,
        data=data,
        headers=call.headers,
        memory=call.memory,
        output_words=call.output_words,
        tool_override=call.tool_override,
    )


def _azure_reply(reply: Reply, *, chat: bool, filter_chunk: bool) -> Reply:
    """An OpenAI-wire reply re-dressed as Azure's."""
    headers = azure_headers()
    if isinstance(reply, StreamReply):
        events = reply.events
        if chat and filter_chunk:
            events = [_prompt_filter_chunk(), *events]
        return StreamReply(events, headers, reply.malformed, reply.content_type)
    body = reply.body
    if chat and reply.status == 200:
        doc = orjson.loads(body)
        doc["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
        for choice in doc.get("choices") or ():
            choice["content_filter_results"] = _safe_filter()
        body = dumps(doc)
    return JsonReply(reply.status, body, headers, reply.content_type)


def _prompt_filter_chunk() -> bytes:
    return sse_data(
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [
                {"prompt_index": 0, "content_filter_results": _safe_filter()}
            ],
        }
    )


# --------------------------------------------------------------------------- routes


def add_routes(sim: Simulator, router: web.UrlDispatcher) -> None:
    """Add this wire's routes to the simulator's router."""

    def deployment_route(
        build: Callable[[Call], Reply], *, chat: bool
    ) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            deployment = request.match_info["deployment"]
            version = request.query.get("api-version")
            filter_chunk = request.headers.get(H_FILTER_CHUNK, "") not in ("", "0", "false")

            def answer(call: Call) -> Reply:
                refused = _refusal(call, version, versioned=True) or _missing_deployment(deployment)
                if refused is not None:
                    return refused
                reply = build(_as_deployment(call, deployment))
                return _azure_reply(reply, chat=chat, filter_chunk=filter_chunk)

            return await sim.serve(request, FLAVOR, answer)

        return handler

    def responses_route(*, v1: bool) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            version = request.query.get("api-version")

            def answer(call: Call) -> Reply:
                refused = _refusal(call, version, versioned=not v1)
                if refused is not None:
                    return refused
                if v1 and version is not None and version not in _V1_VERSIONS:
                    return _reply(400, _error("BadRequest", "API version not supported"))
                model = call.data.get("model")
                if isinstance(model, str):
                    missing = _missing_deployment(model)
                    if missing is not None:
                        return missing
                return _azure_reply(openai_wire.responses(call), chat=False, filter_chunk=False)

            return await sim.serve(request, FLAVOR, answer)

        return handler

    prefix = "/openai/deployments/{deployment}"
    router.add_post(
        f"{prefix}/chat/completions", deployment_route(openai_wire.chat_completions, chat=True)
    )
    router.add_post(f"{prefix}/embeddings", deployment_route(openai_wire.embeddings, chat=False))
    router.add_post("/openai/v1/responses", responses_route(v1=True))
    router.add_post("/openai/responses", responses_route(v1=False))
