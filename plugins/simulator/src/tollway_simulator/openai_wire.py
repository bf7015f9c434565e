"""The OpenAI wire: Chat Completions, Responses, Embeddings, Models."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from collections.abc import Iterable
from typing import Any

from tollway_simulator.common import (
    Call,
    JsonReply,
    PrefixHasher,
    Reply,
    StreamReply,
    b62_id,
    chunk_string,
    custom_tool_input,
    dumps,
    hex_id,
    input_tokens_of,
    int_or_none,
    prefer_shell_tool,
    reply_words,
    sse_data,
    sse_event,
    texts_of,
    tool_arguments,
)
from tollway_simulator.errors import error_reply, provider_headers

SYSTEM_FINGERPRINT = "fp_tollwaysim"
OPENAI_CACHE_MIN_TOKENS = 1024
OPENAI_CACHE_STEP = 128
REASONING_TOKENS = 8
DEFAULT_EMBEDDING_DIMS = 8
MAX_EMBEDDING_DIMS = 4096

MODELS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("gpt-5", "openai"),
    ("text-embedding-3-small", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
)
_MODELS_CREATED = 1715367049


def _bad(message: str, code: str | None = None, param: str | None = None) -> JsonReply:
    return error_reply("openai", 400, message, code=code, param=param)


def _missing(param: str) -> JsonReply:
    return _bad(f"Missing required parameter: '{param}'.", "missing_required_parameter", param)


def _ok(obj: Any) -> JsonReply:
    return JsonReply(200, dumps(obj), provider_headers("openai"))


def cached_tokens(call: Call, units: Iterable[Any], total: int) -> int:
    """OpenAI-style automatic prompt caching: prefixes of ≥1024 tokens, 128-token steps."""
    if total < OPENAI_CACHE_MIN_TOKENS:
        return 0
    hasher = PrefixHasher()
    for unit in units:
        hasher.add(unit)
        hasher.mark()
    memory = call.memory
    hit = memory.longest_seen(hasher.digests)
    cached = 0
    if hit >= 0:
        cached = min(hasher.sizes[hit] // 4, total) // OPENAI_CACHE_STEP * OPENAI_CACHE_STEP
        if cached < OPENAI_CACHE_MIN_TOKENS:
            cached = 0
    memory.remember(
        d
        for d, size in zip(hasher.digests, hasher.sizes, strict=True)
        if size // 4 >= OPENAI_CACHE_MIN_TOKENS
    )
    return cached


# --------------------------------------------------------------------------- chat completions


def _chat_tool(req: dict[str, Any], override: str | None) -> dict[str, Any] | None:
    tools = req.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = req.get("tool_choice")
    if choice == "none" or (override is not None and override.lower() == "none"):
        return None
    functions: list[dict[str, Any]] = [
        t["function"]
        for t in tools
        if isinstance(t, dict)
        and t.get("type", "function") == "function"
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    ]
    if not functions:
        return None
    wanted = override
    if not wanted and isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
    if wanted:
        for fn in functions:
            if fn["name"] == wanted:
                return fn
    return prefer_shell_tool(functions)


def _last_chat_user_text(messages: list[Any]) -> str | None:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return texts_of(m.get("content"))
    return None


def chat_completions(call: Call) -> Reply:
    req = call.data
    model = req.get("model")
    if not isinstance(model, str) or not model:
        return _bad("you must provide a model parameter")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        return _missing("messages")
    stream = req.get("stream") is True
    options = req.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True

    prompt_tokens = input_tokens_of(call.body)
    cached = cached_tokens(call, [model, req.get("tools"), *messages], prompt_tokens)
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    after_tool = last.get("role") == "tool"
    tool = None if after_tool else _chat_tool(req, call.tool_override)

    completion_id = b62_id("chatcmpl-", 29)
    created = int(time.time())
    words: list[str] = []
    if tool is not None:
        arguments = dumps(tool_arguments(tool["name"], tool.get("parameters"))).decode()
        call_id = b62_id("call_", 24)
        completion_tokens = max(1, len(arguments) // 4) + 8
        finish = "tool_calls"
    else:
        words = reply_words(
            _last_chat_user_text(messages),
            after_tool=after_tool,
            output_words=call.output_words,
            chunk_chars=call.chunk_chars,
        )
        finish = "stop"
        limit = int_or_none(req.get("max_completion_tokens"))
        if limit is None:
            limit = int_or_none(req.get("max_tokens"))
        if limit is not None and 0 < limit < len(words):
            words = words[:limit]
            finish = "length"
        completion_tokens = len(words)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }

    if not stream:
        message: dict[str, Any] = {"role": "assistant"}
        if tool is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": arguments},
                }
            ]
        else:
            message["content"] = "".join(words)
        message["refusal"] = None
        message["annotations"] = []
        return _ok(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        )

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            obj["usage"] = None
        return sse_data(obj)

    events: list[bytes] = []
    if tool is not None:
        events.append(
            chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": tool["name"], "arguments": ""},
                        }
                    ],
                    "refusal": None,
                }
            )
        )
        for piece in chunk_string(arguments):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        for word in words:
            events.append(chunk({"content": word}))
    events.append(chunk({}, finish))
    if include_usage:
        events.append(
            sse_data(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "service_tier": "default",
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    malformed = (
        b'data: {"id":"' + completion_id.encode() + b'","object":"chat.completion.chunk",'
        b'"choices":[{"index":0,"delta":{"content":"\n\n'
    )
    return StreamReply(events, provider_headers("openai"), malformed)


# --------------------------------------------------------------------------- responses


def _responses_tools(req: dict[str, Any]) -> list[dict[str, Any]]:
    """Callable tools: top-level ``tools`` and those inside ``additional_tools`` input items."""
    found: list[dict[str, Any]] = []

    def collect(tools: Any) -> None:
        if not isinstance(tools, list):
            return
        for t in tools:
            if not isinstance(t, dict):
                continue
            kind = t.get("type")
            if kind == "namespace":
                collect(t.get("tools"))
            elif kind in ("function", "custom") and isinstance(t.get("name"), str):
                found.append(t)

    collect(req.get("tools"))
    items = req.get("input")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("type") == "additional_tools":
                collect(item.get("tools"))
    return found


def _responses_tool(req: dict[str, Any], override: str | None) -> dict[str, Any] | None:
    choice = req.get("tool_choice")
    if choice == "none" or (override is not None and override.lower() == "none"):
        return None
    tools = _responses_tools(req)
    if not tools:
        return None
    wanted = override
    if not wanted and isinstance(choice, dict):
        wanted = choice.get("name")
    if wanted:
        for t in tools:
            if t["name"] == wanted:
                return t
    return prefer_shell_tool(tools)


def _last_responses_user_text(items: Any) -> str | None:
    if isinstance(items, str):
        return items
    if isinstance(items, list):
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role") == "user":
                return texts_of(item.get("content"), ("input_text", "text", "output_text"))
    return None


def _response_object(
    req: dict[str, Any],
    response_id: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    reasoning = req.get("reasoning")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "max_tool_calls": req.get("max_tool_calls"),
        "model": req["model"],
        "output": output,
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": req.get("previous_response_id"),
        "prompt_cache_key": req.get("prompt_cache_key"),
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
            "summary": reasoning.get("summary") if isinstance(reasoning, dict) else None,
        },
        "safety_identifier": req.get("safety_identifier"),
        "service_tier": "default",
        "store": req.get("store", True),
        "temperature": req.get("temperature", 1.0),
        "text": req.get("text") or {"format": {"type": "text"}},
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools") or [],
        "top_logprobs": req.get("top_logprobs", 0),
        "top_p": req.get("top_p", 1.0),
        "truncation": req.get("truncation") or "disabled",
        "usage": usage,
        "user": req.get("user"),
        "metadata": req.get("metadata") or {},
    }


def responses(call: Call) -> Reply:
    req = call.data
    model = req.get("model")
    if not isinstance(model, str) or not model:
        return _missing("model")
    items = req.get("input")
    item_list = items if isinstance(items, list) else []
    last = item_list[-1] if item_list and isinstance(item_list[-1], dict) else {}
    after_tool = last.get("type") in ("function_call_output", "custom_tool_call_output")
    tool = None if after_tool else _responses_tool(req, call.tool_override)
    stream = req.get("stream") is True

    input_tokens = input_tokens_of(call.body)
    units: list[Any] = [model, req.get("instructions"), req.get("tools")]
    if isinstance(items, str):
        units.append(items)
    else:
        units.extend(item_list)
    cached = cached_tokens(call, units, input_tokens)

    response_id = hex_id("resp_", 24)
    created = int(time.time())
    with_reasoning = isinstance(req.get("reasoning"), dict)
    include = req.get("include")
    encrypted = isinstance(include, list) and "reasoning.encrypted_content" in include

    output: list[dict[str, Any]] = []
    if with_reasoning:
        reasoning_item: dict[str, Any] = {
            "id": hex_id("rs_", 24),
            "type": "reasoning",
            "summary": [],
        }
        if encrypted:
            digest = hashlib.sha256(call.body).digest()
            reasoning_item["encrypted_content"] = "gAAAAA" + base64.b64encode(digest).decode()
        output.append(reasoning_item)
    words: list[str] = []
    if tool is not None and tool.get("type") == "custom":
        tool_input = custom_tool_input(tool["name"])
        item: dict[str, Any] = {
            "id": hex_id("ctc_", 24),
            "type": "custom_tool_call",
            "status": "completed",
            "call_id": b62_id("call_", 24),
            "name": tool["name"],
            "input": tool_input,
        }
        output_tokens = max(1, len(tool_input) // 4) + 8
    elif tool is not None:
        arguments = dumps(tool_arguments(tool["name"], tool.get("parameters"))).decode()
        item = {
            "id": hex_id("fc_", 24),
            "type": "function_call",
            "status": "completed",
            "arguments": arguments,
            "call_id": b62_id("call_", 24),
            "name": tool["name"],
        }
        output_tokens = max(1, len(arguments) // 4) + 8
    else:
        words = reply_words(
            _last_responses_user_text(items),
            after_tool=after_tool,
            output_words=call.output_words,
            chunk_chars=call.chunk_chars,
        )
        item = {
            "id": hex_id("msg_", 24),
            "type": "message",
            "status": "completed",
            "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": "".join(words)}
            ],
            "role": "assistant",
        }
        output_tokens = len(words)
    output.append(item)
    reasoning_tokens = REASONING_TOKENS if with_reasoning else 0
    output_tokens += reasoning_tokens
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }

    if not stream:
        return _ok(_response_object(req, response_id, created, "completed", output, usage))

    events: list[bytes] = []

    def emit(event_type: str, /, **fields: Any) -> None:
        events.append(
            sse_event(event_type, {"type": event_type, "sequence_number": len(events), **fields})
        )

    emit(
        "response.created",
        response=_response_object(req, response_id, created, "in_progress", [], None),
    )
    emit(
        "response.in_progress",
        response=_response_object(req, response_id, created, "in_progress", [], None),
    )
    for index, out in enumerate(output):
        kind = out["type"]
        item_id = out["id"]
        if kind == "reasoning":
            emit("response.output_item.added", output_index=index, item=out)
            emit("response.output_item.done", output_index=index, item=out)
        elif kind == "message":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**out, "status": "in_progress", "content": []},
            )
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            emit(
                "response.content_part.added",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part=part,
            )
            for word in words:
                emit(
                    "response.output_text.delta",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    delta=word,
                    logprobs=[],
                )
            text = "".join(words)
            emit(
                "response.output_text.done",
                item_id=item_id,
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
            emit(
                "response.content_part.done",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part={**part, "text": text},
            )
            emit("response.output_item.done", output_index=index, item=out)
        elif kind == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**out, "status": "in_progress", "arguments": ""},
            )
            for piece in chunk_string(out["arguments"]):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                name=out["name"],
                arguments=out["arguments"],
            )
            emit("response.output_item.done", output_index=index, item=out)
        else:  # custom_tool_call
            emit(
                "response.output_item.added",
                output_index=index,
                item={**out, "status": "in_progress", "input": ""},
            )
            for piece in chunk_string(out["input"]):
                emit(
                    "response.custom_tool_call_input.delta",
                    item_id=item_id,
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.custom_tool_call_input.done",
                item_id=item_id,
                output_index=index,
                input=out["input"],
            )
            emit("response.output_item.done", output_index=index, item=out)
    emit(
        "response.completed",
        response=_response_object(req, response_id, created, "completed", output, usage),
    )
    malformed = (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"sequence_number":\n\n'
    )
    return StreamReply(events, provider_headers("openai"), malformed)


# --------------------------------------------------------------------------- embeddings


def embedding_vector(value: Any, dims: int) -> list[float]:
    """A deterministic unit vector (float32 values) derived from a hash of ``value``."""
    data = value.encode() if isinstance(value, str) else dumps(value)
    raw = hashlib.shake_256(data).digest(4 * dims)
    ints = struct.unpack(f"<{dims}I", raw)
    vec = [(i / 2147483647.5) - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    packed = struct.pack(f"<{dims}f", *(v / norm for v in vec))
    return list(struct.unpack(f"<{dims}f", packed))


def embeddings(call: Call) -> Reply:
    req = call.data
    model = req.get("model")
    if not isinstance(model, str) or not model:
        return _bad("you must provide a model parameter")
    raw = req.get("input")
    if raw is None:
        return _missing("input")
    inputs: list[Any]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        inputs = [raw]  # one pre-tokenised input
    elif isinstance(raw, list) and raw:
        inputs = raw
    else:
        return _bad(
            "'input' : input must be a string, an array of strings or of tokens", None, "input"
        )
    dims = req.get("dimensions", DEFAULT_EMBEDDING_DIMS)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_EMBEDDING_DIMS:
        return _bad(
            f"Invalid 'dimensions': must be an integer in [1, {MAX_EMBEDDING_DIMS}].",
            None,
            "dimensions",
        )
    fmt = req.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        return _bad(
            "Invalid 'encoding_format': must be 'float' or 'base64'.", None, "encoding_format"
        )
    data = []
    for index, value in enumerate(inputs):
        vec = embedding_vector(value, dims)
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if fmt == "base64" else vec
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = input_tokens_of(call.body)
    return _ok(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# --------------------------------------------------------------------------- models


def _openai_model(model_id: str, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _MODELS_CREATED, "owned_by": owner}


def _anthropic_model(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": "2025-09-29T00:00:00Z",
    }


def models_list(anthropic_shape: bool) -> JsonReply:
    if anthropic_shape:
        data = [_anthropic_model(m) for m, _ in MODELS]
        return JsonReply(
            200,
            dumps(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"],
                    "last_id": data[-1]["id"],
                }
            ),
            provider_headers("anthropic"),
        )
    return _ok({"object": "list", "data": [_openai_model(m, o) for m, o in MODELS]})


def model_get(model_id: str, anthropic_shape: bool) -> JsonReply:
    for m, owner in MODELS:
        if m == model_id:
            if anthropic_shape:
                return JsonReply(200, dumps(_anthropic_model(m)), provider_headers("anthropic"))
            return _ok(_openai_model(m, owner))
    if anthropic_shape:
        return error_reply("anthropic", 404, f"model: {model_id}", "not_found_error")
    return error_reply(
        "openai",
        404,
        f"The model '{model_id}' does not exist",
        code="model_not_found",
        param="model",
    )
