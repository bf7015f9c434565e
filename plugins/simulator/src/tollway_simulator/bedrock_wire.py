"""The Amazon Bedrock Converse wire.

Routes (bedrock-runtime paths; the model id is one percent-encoded path segment):

- ``POST /model/{modelId}/converse`` → a Converse JSON answer.
- ``POST /model/{modelId}/converse-stream`` → ``application/vnd.amazon.eventstream``: binary
  event-stream frames (``messageStart``, ``contentBlockStart``/``Delta``/``Stop``,
  ``messageStop``, ``metadata``), encoded by :func:`encode_frame`.

Every request must be authenticated like the real service, so tests prove the gateway signs:

- SigV4 (service ``bedrock``, any region) with the fixed test credential
  :data:`ACCESS_KEY_ID` / :data:`SECRET_ACCESS_KEY`; the signature is recomputed with botocore
  from the request as received (method, raw path, signed headers, body). A wrong signature →
  403 ``InvalidSignatureException``; another access key id → 403
  ``UnrecognizedClientException``; none → 403 ``MissingAuthenticationTokenException``.
- or ``Authorization: Bearer`` with the Bedrock API key :data:`API_KEY`.

The answers reuse the OpenAI wire's deterministic chat logic (the Converse request is read as a
chat request, the chat answer re-framed as Converse). Wire-specific test header:
``x-simulator-bedrock-exception: <exceptionType>[:N]`` — a stream sends N frames, then an
``exception`` frame of that type (``throttlingException``, ``internalServerException``,
``validationException``, ``modelStreamErrorException``, …) and ends; a complete answer gets
the matching HTTP error. Every answer carries ``x-simulator-raw-path`` (the path as received,
percent-encoding kept). Errors are Bedrock's: ``{"message": …}`` plus ``x-amzn-ErrorType``.
"""

from __future__ import annotations

import hmac
import struct
import uuid
import zlib
from collections.abc import Mapping
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
    chunk_string,
    dumps,
    split_words,
)
from tollway_simulator.errors import ErrorFlavor, register_flavor

if TYPE_CHECKING:
    from tollway_simulator.server import Simulator

__all__ = [
    "ACCESS_KEY_ID",
    "API_KEY",
    "EVENTSTREAM_CT",
    "H_EXCEPTION",
    "SECRET_ACCESS_KEY",
    "add_routes",
    "converse",
    "encode_frame",
    "event_frame",
    "exception_frame",
    "verify_auth",
]

#: The one AWS credential the simulator accepts (SigV4). Test-only, documented on purpose.
ACCESS_KEY_ID = "AKIDSIMULATOR"
SECRET_ACCESS_KEY = "simulator-secret"
#: The one Bedrock API key (``Authorization: Bearer``) the simulator accepts.
API_KEY = "bedrock-api-key-simulator"
SERVICE = "bedrock"
EVENTSTREAM_CT = "application/vnd.amazon.eventstream"
H_EXCEPTION = "x-simulator-bedrock-exception"
H_RAW_PATH = "x-simulator-raw-path"
_CORAL = ":http://internal.amazon.com/coral/com.amazon.bedrock/"

# --------------------------------------------------------------------------- error shapes

_ERROR_TYPES: dict[int, str] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_FAULT_MESSAGES: dict[int, str] = {
    400: "Malformed input request, please reformat your input and try again.",
    403: "You don't have access to the model with the specified model ID.",
    404: "The provided model identifier is invalid.",
    408: "Model has timed out in processing the request. Try your request again.",
    424: "The model returned an error (simulated).",
    429: "Too many requests, please wait before trying again.",
    500: "The server encountered an internal error while processing the request.",
    503: "Bedrock is unable to process your request.",
}
#: A stream ``:exception-type`` → the HTTP status of the same error on a complete answer.
_EXCEPTION_STATUS: dict[str, int] = {
    "validationException": 400,
    "accessDeniedException": 403,
    "resourceNotFoundException": 404,
    "modelTimeoutException": 408,
    "modelStreamErrorException": 424,
    "throttlingException": 429,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
}


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(
        status, "InternalServerException" if status >= 500 else "ValidationException"
    )


def _headers() -> dict[str, str]:
    return {"x-amzn-RequestId": str(uuid.uuid4())}


register_flavor(
    "bedrock",
    ErrorFlavor(
        body=lambda _status, message, _type: dumps({"message": message}),
        fault_body=lambda status: dumps(
            {"message": _FAULT_MESSAGES.get(status, f"HTTP {status} (simulated)")}
        ),
        headers=_headers,
        error_headers=lambda status: {"x-amzn-ErrorType": _error_type(status) + _CORAL},
    ),
)


def _error(status: int, message: str, error_type: str | None = None) -> JsonReply:
    headers = _headers()
    headers["x-amzn-ErrorType"] = (error_type or _error_type(status)) + _CORAL
    return JsonReply(status, dumps({"message": message}), headers)


def _invalid(message: str) -> JsonReply:
    return _error(400, message, "ValidationException")


# --------------------------------------------------------------------------- event stream


def encode_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total and headers length, CRC32), string
    headers (type 7), payload, message CRC32. Test infrastructure: botocore only decodes."""
    raw_headers = b"".join(
        struct.pack(">B", len(name.encode()))
        + name.encode()
        + b"\x07"
        + struct.pack(">H", len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """A ConverseStream ``event`` frame."""
    return encode_frame(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        orjson.dumps(payload),
    )


def exception_frame(exception_type: str, message: str) -> bytes:
    """A ConverseStream ``exception`` frame (Bedrock ends the stream after it)."""
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        orjson.dumps({"message": message}),
    )


# Bedrock pads event payloads with a "p" field of varying length (hides token sizes).
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _padded(payload: dict[str, Any], i: int) -> dict[str, Any]:
    return {**payload, "p": _PAD[: 1 + (i * 7) % len(_PAD)]}


# --------------------------------------------------------------------------- authentication


def _signature_mismatch() -> JsonReply:
    return _error(
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details.",
        "InvalidSignatureException",
    )


def verify_auth(
    method: str, raw_path: str, headers: Mapping[str, str], body: bytes
) -> JsonReply | None:
    """None when the request is signed with the test credential (or carries the test API
    key); else the 403 Bedrock answers."""
    auth = headers.get("authorization", "")
    if not auth:
        return _error(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
    scheme, _, rest = auth.partition(" ")
    if scheme.lower() == "bearer":
        if hmac.compare_digest(rest.strip().encode(), API_KEY.encode()):
            return None
        return _error(
            403,
            "The security token included in the request is invalid.",
            "UnrecognizedClientException",
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    credential = fields.get("Credential", "").split("/")
    signed = fields.get("SignedHeaders", "")
    signature = fields.get("Signature", "")
    amz_date = headers.get("x-amz-date", "")
    names = signed.split(";")
    if (
        scheme != "AWS4-HMAC-SHA256"
        or len(credential) != 5
        or not signature
        or not amz_date
        or "host" not in names
        or "x-amz-date" not in names
    ):
        return _error(
            403,
            "Authorization header requires 'Credential', 'Signature', 'SignedHeaders' (with host "
            "and x-amz-date) and an X-Amz-Date header.",
            "IncompleteSignatureException",
        )
    key_id, date, region, service, terminator = credential
    if key_id != ACCESS_KEY_ID:
        return _error(
            403,
            "The security token included in the request is invalid.",
            "UnrecognizedClientException",
        )
    if service != SERVICE or terminator != "aws4_request" or date != amz_date[:8]:
        return _signature_mismatch()
    try:
        from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
        from botocore.credentials import Credentials  # type: ignore[import-untyped]
    except ImportError:
        return _error(
            500, "tollway-simulator: install botocore to verify SigV4 signatures (Bedrock wire)"
        )
    request = AWSRequest(
        method=method,
        url=f"http://{headers.get('host', '')}{raw_path}",
        data=body,
        headers={name: headers.get(name, "") for name in names},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), service, region)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    if not hmac.compare_digest(str(expected).encode(), signature.encode()):
        return _signature_mismatch()
    return None


# --------------------------------------------------------------------------- Converse → chat

_TOP_LEVEL = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "guardrailConfig",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
    }
)
_INFERENCE = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
_BLOCKS = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "toolUse",
        "toolResult",
        "reasoningContent",
        "cachePoint",
    }
)


def _texts(blocks: Any) -> str:
    if not isinstance(blocks, list):
        return ""
    return " ".join(
        b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)
    )


def _check(req: dict[str, Any]) -> JsonReply | None:
    """Bedrock's validation of the parts the translator produces."""
    for key in req:
        if key not in _TOP_LEVEL:
            return _invalid(f"Malformed input request: extraneous key [{key}] is not permitted")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        return _invalid(
            "A conversation must start with a user message. Try again with a "
            "conversation that starts with a user message."
        )
    uses_tools = False
    previous = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return _invalid(f"messages.{i}.role: must be user or assistant")
        role = message["role"]
        if i == 0 and role != "user":
            return _invalid(
                "A conversation must start with a user message. Try again with a "
                "conversation that starts with a user message."
            )
        if role == previous:
            return _invalid(
                "A conversation must alternate between user and assistant roles. "
                "Make sure the conversation alternates between user and assistant "
                "roles and try again."
            )
        previous = role
        content = message.get("content")
        if not isinstance(content, list) or not content:
            return _invalid(f"messages.{i}.content: must be a non-empty list of content blocks")
        for j, block in enumerate(content):
            if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in _BLOCKS:
                return _invalid(
                    f"messages.{i}.content.{j}: a content block has exactly one "
                    f"member of {sorted(_BLOCKS)}"
                )
            if "text" in block and not (isinstance(block["text"], str) and block["text"].strip()):
                return _invalid(
                    f"The text field in the ContentBlock object at messages.{i}."
                    f"content.{j} is blank. Add text to the text field, and try again."
                )
            uses_tools = uses_tools or "toolUse" in block or "toolResult" in block
    if uses_tools and not isinstance(req.get("toolConfig"), dict):
        return _invalid(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    inference = req.get("inferenceConfig")
    if inference is not None and (
        not isinstance(inference, dict) or any(k not in _INFERENCE for k in inference)
    ):
        return _invalid(f"inferenceConfig: only {sorted(_INFERENCE)} are allowed")
    return None


def _chat_request(req: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The Converse request as the OpenAI wire's chat builder reads it."""
    messages: list[dict[str, Any]] = []
    system = _texts(req.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in req["messages"]:
        blocks = message["content"]
        if message["role"] == "user":
            results = [b["toolResult"] for b in blocks if "toolResult" in b]
            for result in results:
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": result.get("toolUseId"),
                        "content": _texts(result.get("content")),
                    }
                )
            text = _texts(blocks)
            if text or not results:
                messages.append({"role": "user", "content": text})
        else:
            calls = [
                {
                    "id": b["toolUse"].get("toolUseId"),
                    "type": "function",
                    "function": {
                        "name": b["toolUse"].get("name"),
                        "arguments": dumps(b["toolUse"].get("input")).decode(),
                    },
                }
                for b in blocks
                if "toolUse" in b
            ]
            out: dict[str, Any] = {"role": "assistant", "content": _texts(blocks) or None}
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
    chat: dict[str, Any] = {"model": model_id, "messages": messages}
    inference = req.get("inferenceConfig") or {}
    if "maxTokens" in inference:
        chat["max_tokens"] = inference["maxTokens"]
    tool_config = req.get("toolConfig")
    if isinstance(tool_config, dict):
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["toolSpec"].get("name"),
                    "description": t["toolSpec"].get("description"),
                    "parameters": (t["toolSpec"].get("inputSchema") or {}).get("json"),
                },
            }
            for t in tool_config.get("tools") or ()
            if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)
        ]
        choice = tool_config.get("toolChoice")
        if isinstance(choice, dict) and isinstance(choice.get("tool"), dict):
            chat["tool_choice"] = {"type": "function", "function": choice["tool"]}
        elif isinstance(choice, dict) and "any" in choice:
            chat["tool_choice"] = "required"
    return chat


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def converse(call: Call, model_id: str, *, stream: bool) -> Reply:
    """The Converse (or ConverseStream) answer to ``call``."""
    try:
        req = orjson.loads(call.body)
    except orjson.JSONDecodeError:
        req = None
    if not isinstance(req, dict):
        return _invalid("Malformed input request, please reformat your input and try again.")
    problem = _check(req)
    if problem is not None:
        return problem
    exception = call.headers.get(H_EXCEPTION)
    exception_type, _, after = (exception or "").partition(":")
    if exception and not stream:
        status = _EXCEPTION_STATUS.get(exception_type, 500)
        return _error(status, _FAULT_MESSAGES.get(status, "simulated"))

    chat_call = Call(
        body=call.body,
        data=_chat_request(req, model_id),
        headers=call.headers,
        memory=call.memory,
        output_words=call.output_words,
        tool_override=call.tool_override,
    )
    answer = openai_wire.chat_completions(chat_call)
    if not isinstance(answer, JsonReply) or answer.status != 200:
        message = "Malformed input request (simulated)."
        if isinstance(answer, JsonReply):
            message = str(orjson.loads(answer.body).get("error", {}).get("message") or message)
        return _invalid(message)
    doc = orjson.loads(answer.body)
    choice = doc["choices"][0]
    text = choice["message"].get("content") or ""
    tools = [
        {
            "toolUseId": b62_id("tooluse_", 22),
            "name": c["function"]["name"],
            "input": orjson.loads(c["function"]["arguments"]),
            "arguments": c["function"]["arguments"],
        }
        for c in choice["message"].get("tool_calls") or ()
    ]
    stop = _STOP.get(choice["finish_reason"], "end_turn")
    chat_usage = doc["usage"]
    cached = chat_usage["prompt_tokens_details"]["cached_tokens"]
    usage: dict[str, Any] = {
        "inputTokens": chat_usage["prompt_tokens"] - cached,
        "outputTokens": chat_usage["completion_tokens"],
        "totalTokens": chat_usage["total_tokens"],
    }
    if cached:
        usage["cacheReadInputTokens"] = cached
        usage["cacheWriteInputTokens"] = 0

    if not stream:
        content: list[dict[str, Any]] = [{"text": text}] if text else []
        content.extend(
            {"toolUse": {k: t[k] for k in ("toolUseId", "name", "input")}} for t in tools
        )
        body = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": usage,
            "metrics": {"latencyMs": 7},
        }
        return JsonReply(200, dumps(body), _headers())

    payloads: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    index = 0
    if text:
        for word in split_words(text):
            payloads.append(
                ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}})
            )
        payloads.append(("contentBlockStop", {"contentBlockIndex": 0}))
        index = 1
    for tool in tools:
        start = {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}
        payloads.append(("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        for piece in chunk_string(tool["arguments"]):
            payloads.append(
                (
                    "contentBlockDelta",
                    {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}},
                )
            )
        payloads.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    payloads.append(("messageStop", {"stopReason": stop}))
    payloads.append(("metadata", {"usage": usage, "metrics": {"latencyMs": 7}}))
    events = [event_frame(name, _padded(p, i)) for i, (name, p) in enumerate(payloads)]
    if exception:
        cut = int(after) if after.isdigit() else 0
        status = _EXCEPTION_STATUS.get(exception_type, 500)
        events = [
            *events[:cut],
            exception_frame(exception_type, _FAULT_MESSAGES.get(status, "simulated")),
        ]
    malformed = bytearray(events[len(events) // 2])
    malformed[-1] ^= 0xFF  # a frame whose message CRC does not match
    return StreamReply(events, _headers(), bytes(malformed), EVENTSTREAM_CT)


# --------------------------------------------------------------------------- routes


def add_routes(sim: Simulator, router: web.UrlDispatcher) -> None:
    """Add this wire's routes to the simulator's router."""

    async def handle(request: web.Request, stream: bool) -> web.StreamResponse:
        body = await request.read()
        raw_path = request.raw_path
        denied = verify_auth(request.method, raw_path, request.headers, body)
        model_id = request.match_info["model_id"]

        def build(call: Call) -> Reply:
            reply = denied if denied is not None else converse(call, model_id, stream=stream)
            reply.headers[H_RAW_PATH] = raw_path
            return reply

        return await sim.serve(request, "bedrock", build, parse_json=False)

    async def converse_json(request: web.Request) -> web.StreamResponse:
        return await handle(request, False)

    async def converse_stream(request: web.Request) -> web.StreamResponse:
        return await handle(request, True)

    router.add_post("/model/{model_id:.+}/converse", converse_json)
    router.add_post("/model/{model_id:.+}/converse-stream", converse_stream)
