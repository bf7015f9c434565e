"""The Google Gemini API (generativelanguage) wire.

Routes (``{version}`` is ``v1beta`` or ``v1``; the model is in the path)::

    POST /{version}/models/{model}:generateContent
    POST /{version}/models/{model}:streamGenerateContent?alt=sse   (SSE, no [DONE])
    POST /{version}/models/{model}:streamGenerateContent           (a JSON array of chunks)

The key comes in ``x-goog-api-key`` (or the ``key`` query parameter); without one the answer is
Gemini's 403 ``PERMISSION_DENIED``. Answers reuse the OpenAI chat builder's deterministic logic:
the ``GenerateContentRequest`` is read as a chat request (:func:`gemini_to_chat`), answered by
:func:`tollway_simulator.openai_wire.chat_completions`, and re-framed as a
``GenerateContentResponse`` — text, or ``functionCall`` parts when tools are declared and the
conversation does not end with a ``functionResponse``. ``x-simulator-tool: a,b`` (a
comma-separated list) asks for parallel calls of those functions. Models whose id contains
``-pro`` report ``thoughtsTokenCount`` (thinking models). Errors have Google's shape
``{"error": {"code", "message", "status"}}`` (flavor ``"gemini"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tollway_simulator import openai_wire
from tollway_simulator.common import (
    Call,
    JsonReply,
    Reply,
    StreamReply,
    b62_id,
    dumps,
    input_tokens_of,
    split_words,
    tool_arguments,
)
from tollway_simulator.errors import ErrorFlavor, error_reply, register_flavor

if TYPE_CHECKING:
    from tollway_simulator.server import Simulator

FLAVOR = "gemini"
THOUGHTS_TOKENS = 8

#: HTTP status → google.rpc status name.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def google_error_body(status: int, message: str) -> bytes:
    """Google's error shape (``google.rpc.Status`` in an ``error`` object)."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if status == 429:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
        ]
    return dumps({"error": error})


def _headers() -> dict[str, str]:
    return {"server-timing": "gfet4t7; dur=7", "vary": "Origin, X-Origin, Referer"}


register_flavor(
    FLAVOR,
    ErrorFlavor(
        body=lambda status, message, _type: google_error_body(status, message),
        fault_body=lambda status: google_error_body(
            status, _FAULT_MESSAGES.get(status, f"HTTP {status}")
        ),
        headers=_headers,
    ),
)


def google_error(status: int, message: str) -> JsonReply:
    return error_reply(FLAVOR, status, message)


# --------------------------------------------------------------------------- request → chat


def _lower_schema(schema: Any) -> Any:
    """Gemini's upper-case OpenAPI types back to JSON-schema ones (for the schema examples)."""
    if isinstance(schema, list):
        return [_lower_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: _lower_schema(v) for k, v in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = _lower_schema(value)
        else:
            out[key] = value
    return out


def declarations_of(req: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's function declarations, with JSON-schema ``parameters``."""
    found = []
    tools = req.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        for decl in tool.get("functionDeclarations") or ():
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                params = decl.get("parametersJsonSchema")
                if params is None:
                    params = _lower_schema(decl.get("parameters"))
                found.append({"name": decl["name"], "parameters": params})
    return found


def gemini_to_chat(req: dict[str, Any], model: str) -> dict[str, Any]:
    """A ``GenerateContentRequest`` read as an OpenAI chat request (for the chat builder and
    for tests: tool call ids are made up, ``call_<n>`` in order, and each function response
    takes the id of the earliest unanswered call of its name)."""
    messages: list[dict[str, Any]] = []
    system = req.get("systemInstruction")
    if isinstance(system, dict):
        texts = [
            p["text"] for p in system.get("parts") or () if isinstance(p, dict) and "text" in p
        ]
        if texts:
            messages.append({"role": "system", "content": "".join(texts)})
    pending: list[tuple[str, str]] = []  # (id, name) of unanswered calls
    counter = 0
    for content in req.get("contents") or ():
        if not isinstance(content, dict):
            continue
        role = content.get("role") or "user"
        parts = [p for p in content.get("parts") or () if isinstance(p, dict)]
        if role == "model":
            text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str))
            calls = []
            for p in parts:
                call = p.get("functionCall")
                if isinstance(call, dict):
                    call_id = f"call_{counter}"
                    counter += 1
                    pending.append((call_id, str(call.get("name"))))
                    calls.append(
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {
                                "name": call.get("name"),
                                "arguments": dumps(call.get("args") or {}).decode(),
                            },
                        }
                    )
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
            continue
        user_parts: list[dict[str, Any]] = []
        for p in parts:
            response = p.get("functionResponse")
            if isinstance(response, dict):
                name = str(response.get("name"))
                match = next((i for i, (_, n) in enumerate(pending) if n == name), None)
                if match is None:
                    call_id = f"call_{counter}"
                    counter += 1
                else:
                    call_id = pending.pop(match)[0]
                result = response.get("response")
                if isinstance(result, dict) and set(result) == {"result"}:
                    text = result["result"]
                    text = text if isinstance(text, str) else dumps(text).decode()
                else:
                    text = dumps(result).decode()
                messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            elif isinstance(p.get("text"), str):
                user_parts.append({"type": "text", "text": p["text"]})
            elif isinstance(p.get("inlineData"), dict):
                data = p["inlineData"]
                url = f"data:{data.get('mimeType')};base64,{data.get('data')}"
                user_parts.append({"type": "image_url", "image_url": {"url": url}})
            elif isinstance(p.get("fileData"), dict):
                url = str(p["fileData"].get("fileUri"))
                user_parts.append({"type": "image_url", "image_url": {"url": url}})
        if user_parts:
            messages.append({"role": "user", "content": user_parts})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    declarations = declarations_of(req)
    if declarations:
        chat["tools"] = [{"type": "function", "function": d} for d in declarations]
        mode = (req.get("toolConfig") or {}).get("functionCallingConfig") or {}
        kind = mode.get("mode") if isinstance(mode, dict) else None
        allowed = mode.get("allowedFunctionNames") if isinstance(mode, dict) else None
        if kind == "NONE":
            chat["tool_choice"] = "none"
        elif kind == "ANY" and isinstance(allowed, list) and allowed:
            chat["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
        elif kind == "ANY":
            chat["tool_choice"] = "required"
        elif kind == "AUTO":
            chat["tool_choice"] = "auto"
    config = req.get("generationConfig")
    if isinstance(config, dict) and config.get("maxOutputTokens") is not None:
        chat["max_tokens"] = config["maxOutputTokens"]
    return chat


# --------------------------------------------------------------------------- the answer


def _ends_with_function_response(req: dict[str, Any]) -> bool:
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents or not isinstance(contents[-1], dict):
        return False
    return any(
        isinstance(p, dict) and "functionResponse" in p for p in contents[-1].get("parts") or ()
    )


def _validate(req: dict[str, Any]) -> JsonReply | None:
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        return google_error(400, "* GenerateContentRequest.contents: contents is not specified\n")
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or not content.get("parts"):
            return google_error(
                400,
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be "
                "empty.\n",
            )
        if content.get("role", "user") not in ("user", "model"):
            return google_error(400, f"Please use a valid role: user, model. (contents[{i}].role)")
    return None


def generate_content(call: Call, model: str, *, stream: bool, sse: bool = True) -> Reply:
    """Answer a ``GenerateContentRequest`` for ``model`` (``stream``: the SSE chunks, or with
    ``sse=False`` the JSON array ``streamGenerateContent`` returns without ``alt=sse``)."""
    req = call.data
    problem = _validate(req)
    if problem is not None:
        return problem
    chat = gemini_to_chat(req, model)
    override = call.tool_override
    parallel = override is not None and "," in override
    chat_call = Call(
        body=call.body,
        data=chat,
        headers=call.headers,
        memory=call.memory,
        output_words=call.output_words,
        tool_override=None if parallel else override,
    )
    reply = openai_wire.chat_completions(chat_call)
    if not isinstance(reply, JsonReply) or reply.status != 200:
        message = "Request contains an invalid argument."
        if isinstance(reply, JsonReply):
            message = str(orjson.loads(reply.body).get("error", {}).get("message") or message)
        return google_error(400, message)
    doc = orjson.loads(reply.body)
    choice = doc["choices"][0]
    usage = doc["usage"]
    text = choice["message"].get("content") or ""
    calls: list[dict[str, Any]] = []
    finish = "STOP"
    if parallel and not _ends_with_function_response(req):
        wanted = [n.strip() for n in (override or "").split(",") if n.strip()]
        declared = {d["name"]: d for d in declarations_of(req)}
        for name in wanted:
            if name in declared:
                args = tool_arguments(name, declared[name].get("parameters"))
                calls.append({"name": name, "args": args})
        if calls:
            text = ""
            usage["completion_tokens"] = sum(len(dumps(c["args"])) // 4 + 8 for c in calls)
    else:
        for tool_call in choice["message"].get("tool_calls") or ():
            function = tool_call["function"]
            calls.append({"name": function["name"], "args": orjson.loads(function["arguments"])})
        if choice["finish_reason"] == "length":
            finish = "MAX_TOKENS"
    prompt = input_tokens_of(call.body)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    thoughts = THOUGHTS_TOKENS if "-pro" in model else 0
    response_id = b62_id("", 22)

    def metadata(candidates: int) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
        if cached:
            meta["cachedContentTokenCount"] = cached
            meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        if thoughts:
            meta["thoughtsTokenCount"] = thoughts
        return meta

    def chunk(parts: list[dict[str, Any]], candidates: int, done: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if done:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": metadata(candidates),
            "modelVersion": model,
            "responseId": response_id,
        }

    completion_tokens = int(usage["completion_tokens"])
    call_parts = [{"functionCall": c} for c in calls]
    if not stream:
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        parts.extend(call_parts)
        return JsonReply(200, dumps(chunk(parts, completion_tokens, True)), _headers())

    chunks: list[dict[str, Any]] = []
    if calls:
        chunks.append(chunk(call_parts, completion_tokens, True))
    else:
        words = split_words(text) or [""]
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunks.append(chunk([{"text": word}], completion_tokens if last else i + 1, last))
    if not sse:
        return JsonReply(200, dumps(chunks), _headers())
    events = [b"data: " + dumps(c) + b"\r\n\r\n" for c in chunks]
    malformed = b'data: {"candidates": [{"content": {"parts": [{"text": "\r\n\r\n'
    return StreamReply(events, _headers(), malformed)


# --------------------------------------------------------------------------- routes


def split_target(target: str) -> tuple[str, str]:
    """``"gemini-2.5-flash:generateContent"`` → ``("gemini-2.5-flash", "generateContent")``."""
    model, _, method = target.rpartition(":")
    return model, method


def add_routes(sim: Simulator, router: web.UrlDispatcher) -> None:
    """Add this wire's routes to the simulator's router."""

    async def handle(request: web.Request) -> web.StreamResponse:
        model, method = split_target(request.match_info["target"])
        has_key = bool(request.headers.get("x-goog-api-key") or request.query.get("key"))
        sse = request.query.get("alt") == "sse"

        def build(call: Call) -> Reply:
            if not has_key:
                return google_error(403, UNREGISTERED)
            if not model:
                return google_error(404, f"models/{model} is not found")
            if method == "generateContent":
                return generate_content(call, model, stream=False)
            if method == "streamGenerateContent":
                return generate_content(call, model, stream=True, sse=sse)
            return google_error(
                404, f"Method {method!r} is not served by the simulator's Gemini wire"
            )

        return await sim.serve(request, FLAVOR, build)

    for version in ("v1beta", "v1"):
        router.add_post(f"/{version}/models/{{target}}", handle)


__all__ = [
    "FLAVOR",
    "add_routes",
    "declarations_of",
    "gemini_to_chat",
    "generate_content",
    "google_error",
    "google_error_body",
    "split_target",
]
