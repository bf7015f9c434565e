"""OpenAI chat completions ⇄ Gemini ``generateContent``: pure functions, no I/O.

Chat is the hub: an OpenAI chat client is translated directly, an Anthropic messages client by
composing these functions with the core's chat ⇄ messages translators (``tollway.formats``).
The Vertex AI adapter reuses this module unchanged (Gemini on Vertex has the same bodies).

- Requests: :func:`chat_request_to_gemini` returns the ``GenerateContentRequest`` body and the
  chat parameters Gemini cannot take (for ``X-LangWatch-Params-Dropped``);
  :func:`json_schema_to_gemini` converts tool and response schemas to Gemini's OpenAPI subset.
- Responses: :func:`gemini_response_to_chat`, :func:`gemini_usage` (``usageMetadata`` →
  :class:`~tollway.Usage`).
- Streams: :class:`GeminiToChatStream` turns the ``streamGenerateContent?alt=sse`` events into
  ``chat.completion.chunk`` events (a :class:`~tollway.formats.StreamTranslator` for
  :func:`~tollway.formats.reframe_sse`); :class:`ChainedStream` feeds its output to a second
  translator (``ChatToMessagesStream`` for Anthropic clients).

Usage: Gemini's ``promptTokenCount`` includes ``cachedContentTokenCount`` and
``candidatesTokenCount`` excludes ``thoughtsTokenCount``. As for OpenAI (whose
``completion_tokens`` include reasoning tokens, see ``tollway.formats.chat_usage``),
``output_tokens`` = candidates + thoughts, ``reasoning_tokens`` = thoughts, ``input_tokens`` =
prompt (+ tool-use prompt) - cached, ``cache_read_input_tokens`` = cached.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tollway import BadRequest, Usage, quote_input
from tollway.formats import (
    CHAT_COMMON_PARAMS,
    SSE_DONE,
    DroppedParams,
    StreamTranslator,
    Translated,
    TranslationError,
    assistant_tool_calls,
    chat_chunk,
    chat_messages,
    chat_usage_chunk,
    content_parts,
    dropped_chat_params,
    file_part_data,
    image_part_url,
    new_chat_completion_id,
    parse_data_url,
    part_text,
    sse_data,
    text_of_parts,
    tool_call_arguments,
    tool_functions,
    usage_to_chat,
)
from tollway.formats import new_tool_call_id as new_call_id
from tollway.sse import SSESplitter, event_fields

__all__ = [
    "ChainedStream",
    "GeminiToChatStream",
    "chat_request_to_gemini",
    "finish_reason_from_gemini",
    "gemini_response_to_chat",
    "gemini_usage",
    "json_schema_to_gemini",
    "new_call_id",
]

#: Gemini accepts at most this many stop sequences.
MAX_STOP_SEQUENCES = 5

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}

_HANDLED = CHAT_COMMON_PARAMS | {
    "top_k",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
}

# JSON-schema keys Gemini's OpenAPI-subset ``Schema`` takes as they are.
_SCHEMA_KEEP = frozenset(
    {
        "format",
        "title",
        "description",
        "nullable",
        "maxItems",
        "minItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "minimum",
        "maximum",
        "default",
        "propertyOrdering",
    }
)
# Keys left out silently: annotations and constraints whose loss does not change what the model
# is asked for.
_SCHEMA_SILENT = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "additionalProperties",
        "strict",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "uniqueItems",
        "contentEncoding",
        "contentMediaType",
    }
)
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})


#: The old private name of :class:`~tollway.formats.DroppedParams` (kept for callers).
_Dropped = DroppedParams


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- schemas


def json_schema_to_gemini(schema: Any, dropped: DroppedParams | None = None) -> dict[str, Any]:
    """A JSON schema as Gemini's OpenAPI-subset ``Schema``.

    Types become upper case (``["string", "null"]`` → ``STRING`` + ``nullable``), ``const``
    becomes a one-value ``enum``, ``oneOf`` becomes ``anyOf``, local ``$ref``s are inlined
    (to a depth of 8); annotations Gemini rejects (``additionalProperties``, ``$schema``,
    ``strict``, …) are left out. Keys that change the meaning (``allOf``, ``not``,
    ``patternProperties``, an unresolvable ``$ref``) are left out and named in ``dropped``.
    """
    if not isinstance(schema, dict):
        return {"type": "OBJECT", "properties": {}}
    defs = {**_obj(schema.get("definitions")), **_obj(schema.get("$defs"))}
    return _schema(schema, defs, dropped or DroppedParams(), 0)


def _schema(
    schema: Any, defs: dict[str, Any], dropped: DroppedParams, depth: int
) -> dict[str, Any]:
    if not isinstance(schema, dict) or depth > 32:
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        target = defs.get(name) if ref.startswith("#/") else None
        if isinstance(target, dict) and depth < 8:
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            return _schema(merged, defs, dropped, depth + 1)
        dropped.add("tools.parameters.$ref")
        return {k: v for k, v in _schema_keys(schema, defs, dropped, depth).items()} or {
            "type": "STRING"
        }
    return _schema_keys(schema, defs, dropped, depth)


def _schema_keys(
    schema: dict[str, Any], defs: dict[str, Any], dropped: DroppedParams, depth: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        if "null" in kinds:
            out["nullable"] = True
        rest = [k for k in kinds if k != "null"]
        if len(rest) > 1:
            out["anyOf"] = [{"type": k.upper()} for k in rest if k in _JSON_TYPES]
            kind = None
        else:
            kind = rest[0] if rest else "null"
    if isinstance(kind, str) and kind.lower() in _JSON_TYPES:
        if kind.lower() == "null":
            out["nullable"] = True
        else:
            out["type"] = kind.upper()
    for key, value in schema.items():
        if key in ("type", "$ref", "$defs", "definitions"):
            continue
        if key in _SCHEMA_KEEP:
            out[key] = value
        elif key == "enum" and isinstance(value, list):
            if None in value:
                out["nullable"] = True
            out["enum"] = [v if isinstance(v, str) else orjson.dumps(v).decode() for v in value]
            if any(v is not None and not isinstance(v, str) for v in value):
                out["type"] = "STRING"  # Gemini enums are strings
            out.setdefault("type", "STRING")
        elif key == "const":
            out["enum"] = [value if isinstance(value, str) else orjson.dumps(value).decode()]
            out["type"] = "STRING"
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {
                str(name): _schema(sub, defs, dropped, depth + 1) for name, sub in value.items()
            }
        elif key == "required" and isinstance(value, list):
            out["required"] = [r for r in value if isinstance(r, str)]
        elif key == "items" and isinstance(value, dict):
            out["items"] = _schema(value, defs, dropped, depth + 1)
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            options = [v for v in value if isinstance(v, dict)]
            if any(v.get("type") == "null" for v in options):
                out["nullable"] = True
            options = [v for v in options if v.get("type") != "null"]
            if len(options) == 1:
                for k, v in _schema(options[0], defs, dropped, depth + 1).items():
                    out.setdefault(k, v)
            elif options:
                out["anyOf"] = [_schema(v, defs, dropped, depth + 1) for v in options]
        elif key in _SCHEMA_SILENT or key.startswith("x-"):
            continue
        else:
            dropped.add(f"tools.parameters.{key}")
    if "properties" in out and "type" not in out and "anyOf" not in out:
        out["type"] = "OBJECT"
    if out.get("type") == "OBJECT":
        props = out.get("properties")
        if isinstance(props, dict) and isinstance(out.get("required"), list):
            out["required"] = [r for r in out["required"] if r in props]
    return out


# --------------------------------------------------------------------------- requests


def _user_parts(content: Any, where: str, dropped: DroppedParams) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if content is None:
        return []
    parts: list[dict[str, Any]] = []
    for part_where, part, kind in content_parts(content, where):
        if kind in ("text", "input_text"):
            text = part_text(part, part_where)
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            url = image_part_url(part, part_where, dropped)
            parsed = parse_data_url(url, f"{part_where}.image_url.url", upstream="Gemini")
            if parsed is not None:
                parts.append({"inlineData": {"mimeType": parsed[0], "data": parsed[1]}})
            else:
                mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
                parts.append({"fileData": {"mimeType": mime, "fileUri": url}})
        elif kind == "input_audio":
            audio = _obj(part.get("input_audio"))
            data, fmt = audio.get("data"), audio.get("format")
            if not isinstance(data, str):
                raise BadRequest(
                    f"{part_where}.input_audio.data must be a string", param=part_where
                )
            parts.append({"inlineData": {"mimeType": f"audio/{fmt or 'wav'}", "data": data}})
        elif kind == "file":
            parsed = file_part_data(part, part_where, upstream="Gemini")
            if parsed is not None:
                parts.append({"inlineData": {"mimeType": parsed[0], "data": parsed[1]}})
            else:
                dropped.add("content.file")
        else:
            dropped.add(f"content.{kind}")
    return parts


def _tool_response(content: Any, where: str) -> dict[str, Any]:
    """A tool message's content as a ``functionResponse.response`` object.

    A JSON object is sent as it is; anything else as ``{"result": <text>}``.
    """
    text = "".join(text_of_parts(content, f"{where}.content"))
    if text.startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"result": text}


def _contents(
    messages: list[Any], dropped: DroppedParams
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system instruction parts, contents)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name
    responses: list[dict[str, Any]] | None = None  # the open merged function-response turn
    for where, role, message in chat_messages(messages, dropped):
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend({"text": t} for t in text_of_parts(content, f"{where}.content") if t)
            continue
        if role == "tool":
            call_id = message["tool_call_id"]
            name = names.get(call_id)
            if name is None:
                raise BadRequest(
                    f"{where}.tool_call_id {quote_input(call_id)} matches no earlier "
                    "assistant tool call; Gemini needs the function's name for each tool result",
                    param=where,
                )
            part = {"functionResponse": {"name": name, "response": _tool_response(content, where)}}
            if responses is None:
                responses = [part]
                contents.append({"role": "user", "parts": responses})
            else:
                responses.append(part)
            continue
        responses = None
        if role == "user":
            parts = _user_parts(content, where, dropped)
            contents.append({"role": "user", "parts": parts or [{"text": ""}]})
        elif role == "assistant":
            parts = [{"text": t} for t in text_of_parts(content, f"{where}.content") if t]
            refusal = message.get("refusal")
            if not parts and isinstance(refusal, str) and refusal:
                parts.append({"text": refusal})
            for call_where, call, function in assistant_tool_calls(message, where):
                name, call_id = function.get("name"), call.get("id")
                if not isinstance(name, str) or not name:
                    raise BadRequest(f"{call_where}.function.name is required", param=call_where)
                if isinstance(call_id, str):
                    names[call_id] = name
                args = tool_call_arguments(
                    function.get("arguments"), call_where, upstream="Gemini", strict=True
                )
                parts.append({"functionCall": {"name": name, "args": args}})
            if parts:
                contents.append({"role": "model", "parts": parts})
        else:  # function
            raise BadRequest(
                f"{where}: legacy 'function' messages cannot be translated for Gemini; use "
                "tools and 'tool' messages",
                param=where,
            )
    return system, contents


def _tools(tools: list[Any], dropped: DroppedParams) -> list[dict[str, Any]]:
    declarations = []
    for function in tool_functions(tools, dropped):
        declaration: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        params = function.get("parameters")
        if isinstance(params, dict) and (params.get("properties") or params.get("type")):
            converted = json_schema_to_gemini(params, dropped)
            # A function without parameters is declared without the field.
            if converted.get("properties") or converted.get("type") not in (None, "OBJECT"):
                declaration["parameters"] = converted
        if function.get("strict"):
            dropped.add("tools.function.strict")
        declarations.append(declaration)
    return declarations


def _tool_config(choice: Any, dropped: DroppedParams) -> dict[str, Any] | None:
    if choice is None:
        return None
    mode: dict[str, Any]
    if choice == "auto":
        mode = {"mode": "AUTO"}
    elif choice == "none":
        mode = {"mode": "NONE"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = _obj(choice.get("function")).get("name")
        if not isinstance(name, str):
            raise BadRequest("tool_choice.function.name is required", param="tool_choice")
        mode = {"mode": "ANY", "allowedFunctionNames": [name]}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = _obj(choice.get("allowed_tools"))
        names = [
            _obj(t.get("function")).get("name")
            for t in allowed.get("tools") or ()
            if isinstance(t, dict)
        ]
        mode = {"mode": "ANY" if allowed.get("mode") == "required" else "AUTO"}
        names = [n for n in names if isinstance(n, str)]
        if names and mode["mode"] == "ANY":
            mode["allowedFunctionNames"] = names
        elif names:
            dropped.add("tool_choice.allowed_tools")
    else:
        dropped.add("tool_choice")
        return None
    return {"functionCallingConfig": mode}


def chat_request_to_gemini(body: Mapping[str, Any]) -> Translated:
    """An OpenAI chat request as a Gemini ``GenerateContentRequest`` body.

    The model is not part of the body (it goes in the URL). ``system``/``developer`` messages
    become ``systemInstruction``; user parts become ``text`` / ``inlineData`` (base64 data URLs,
    input audio, files) / ``fileData`` (other image URLs) parts; assistant tool calls become
    ``functionCall`` parts and tool messages ``functionResponse`` parts of a user turn, named
    from the matching tool call (consecutive results merge into one turn). ``tools`` become
    ``functionDeclarations``, ``tool_choice`` the ``functionCallingConfig``; sampling, stop,
    ``n``, ``seed``, penalties and ``response_format`` go in ``generationConfig``. Everything
    else is left out and returned in ``dropped``.
    """
    dropped = dropped_chat_params(body, _HANDLED)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be an array", param="messages")
    system, contents = _contents(messages, dropped)
    if not contents:
        raise BadRequest(
            "'messages' has no user or assistant message; Gemini needs at least one",
            param="messages",
        )
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}

    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    declarations = _tools(tools or [], dropped)
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        config = _tool_config(body.get("tool_choice"), dropped)
        if config is not None:
            out["toolConfig"] = config
        if body.get("parallel_tool_calls") is False:
            dropped.add("parallel_tool_calls")

    generation: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        generation["maxOutputTokens"] = max_tokens
    for name, field in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = body.get(name)
        if value is not None:
            generation[field] = value
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        generation["candidateCount"] = n
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and stop:
        if len(stop) > MAX_STOP_SEQUENCES:
            dropped.add("stop")
        generation["stopSequences"] = stop[:MAX_STOP_SEQUENCES]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        generation["responseMimeType"] = "application/json"
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        generation["responseMimeType"] = "application/json"
        schema = _obj(fmt.get("json_schema")).get("schema")
        if isinstance(schema, dict):
            generation["responseSchema"] = json_schema_to_gemini(schema, dropped)
    elif fmt is not None and fmt != {"type": "text"}:
        dropped.add("response_format")
    if generation:
        out["generationConfig"] = generation
    return Translated(out, dropped.result())


# --------------------------------------------------------------------------- responses


def finish_reason_from_gemini(reason: str | None, tool_calls: bool = False) -> str:
    """The OpenAI ``finish_reason`` for a Gemini ``finishReason`` (``STOP`` after function calls
    is ``tool_calls``)."""
    finish = _FINISH.get(reason or "", "stop")
    if finish == "stop" and tool_calls:
        return "tool_calls"
    return finish


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def gemini_usage(meta: Mapping[str, Any]) -> Usage:
    """A Gemini ``usageMetadata`` as :class:`~tollway.Usage` (see the module doc)."""
    cached = _int(meta.get("cachedContentTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    prompt = _int(meta.get("promptTokenCount")) + _int(meta.get("toolUsePromptTokenCount"))
    return Usage(
        input_tokens=max(0, prompt - cached),
        output_tokens=_int(meta.get("candidatesTokenCount")) + thoughts,
        cache_read_input_tokens=cached,
        reasoning_tokens=thoughts,
    )


def _blocked_message(feedback: Mapping[str, Any]) -> str | None:
    reason = feedback.get("blockReason")
    if not reason:
        return None
    detail = feedback.get("blockReasonMessage")
    text = f"Gemini blocked the prompt (blockReason {reason})"
    return f"{text}: {detail}" if isinstance(detail, str) and detail else text


def _call_of(part: Mapping[str, Any]) -> dict[str, Any] | None:
    call = part.get("functionCall")
    if not isinstance(call, dict):
        return None
    call_id = call.get("id")
    return {
        "id": call_id if isinstance(call_id, str) and call_id else new_call_id(),
        "type": "function",
        "function": {
            "name": str(call.get("name") or ""),
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }


def gemini_response_to_chat(
    doc: Mapping[str, Any], *, model: str, created: int | None = None
) -> dict[str, Any]:
    """A ``GenerateContentResponse`` as an OpenAI ``chat.completion`` (a choice per candidate).

    Text parts are joined (thought summaries left out), ``functionCall`` parts become
    ``tool_calls`` with fresh ``call_…`` ids (Gemini's own ``id`` when it sends one). A prompt
    blocked by ``promptFeedback.blockReason`` becomes a ``content_filter`` choice whose
    ``refusal`` says why.
    """
    choices: list[dict[str, Any]] = []
    candidates = doc.get("candidates")
    for n, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
        if not isinstance(candidate, dict):
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in _obj(candidate.get("content")).get("parts") or ():
            if not isinstance(part, dict) or part.get("thought"):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            call = _call_of(part)
            if call is not None:
                calls.append(call)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            message["tool_calls"] = calls
        message["refusal"] = None
        index = candidate.get("index")
        choices.append(
            {
                "index": index if isinstance(index, int) else n,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason_from_gemini(
                    candidate.get("finishReason"), bool(calls)
                ),
            }
        )
    if not choices:
        refusal = _blocked_message(_obj(doc.get("promptFeedback")))
        choices.append(
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": refusal or "Gemini returned no candidates",
                },
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        )
    response_id = doc.get("responseId")
    out: dict[str, Any] = {
        "id": f"chatcmpl-{response_id}"
        if isinstance(response_id, str)
        else new_chat_completion_id(),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": choices,
    }
    meta = doc.get("usageMetadata")
    if isinstance(meta, dict):
        out["usage"] = usage_to_chat(gemini_usage(meta))
    return out


# --------------------------------------------------------------------------- streams


class GeminiToChatStream:
    """Gemini ``streamGenerateContent?alt=sse`` events as ``chat.completion.chunk`` events.

    The role arrives on the first delta; each text part is a ``content`` delta, each
    ``functionCall`` part one complete tool call delta (index, id, name, arguments — Gemini
    sends function calls whole); a candidate's ``finishReason`` gives its finish chunk. Gemini
    has no terminal event: :meth:`end` adds the usage chunk (only when the client asked for
    ``stream_options.include_usage``) and ``data: [DONE]``, or raises
    :class:`~tollway.formats.TranslationError` when no finish reason came (a cut stream).
    ``usageMetadata`` (repeated, growing, on the events) is passed to ``on_usage``.
    """

    def __init__(
        self,
        *,
        model: str,
        include_usage: bool = False,
        on_usage: Callable[[Usage], None] | None = None,
        created: int | None = None,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.on_usage = on_usage
        self.created = created if created is not None else int(time.time())
        self.id = ""
        self.usage: Usage | None = None
        self.done = False
        self._started = False
        self._tool_count: dict[int, int] = {}  # candidate → tool calls so far
        self._finished: dict[int, str] = {}

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return chat_chunk(self.id, self.created, self.model, delta, finish, index=index)

    def feed(self, block: bytes) -> bytes:
        _, data = event_fields(block)
        if not data or self.done:
            return b""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise TranslationError(
                f"Gemini sent a stream event that is not valid JSON: {data[:120]!r}"
            ) from None
        if not isinstance(doc, dict):
            raise TranslationError(
                f"Gemini sent a stream event that is not an object: {data[:120]!r}"
            )
        error = doc.get("error")
        if isinstance(error, dict):
            # An in-stream error: passed on with its ``error`` key, which the openai SDK raises.
            self.done = True
            return sse_data({"error": {"type": str(error.get("status") or "api_error"), **error}})
        out: list[bytes] = []
        if not self._started:
            self._started = True
            response_id = doc.get("responseId")
            self.id = (
                f"chatcmpl-{response_id}"
                if isinstance(response_id, str)
                else new_chat_completion_id()
            )
            out.append(self._chunk(0, {"role": "assistant", "content": ""}))
        meta = doc.get("usageMetadata")
        if isinstance(meta, dict):
            self.usage = gemini_usage(meta)
            if self.on_usage is not None:
                self.on_usage(self.usage)
        candidates = doc.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            refusal = _blocked_message(_obj(doc.get("promptFeedback")))
            if refusal is not None and 0 not in self._finished:
                self._finished[0] = "content_filter"
                out.append(self._chunk(0, {"refusal": refusal}))
                out.append(self._chunk(0, {}, "content_filter"))
            return b"".join(out)
        for n, candidate in enumerate(candidates):
            if not isinstance(candidate, dict):
                continue
            raw_index = candidate.get("index")
            index = raw_index if isinstance(raw_index, int) else n
            if index in self._finished:
                continue
            for part in _obj(candidate.get("content")).get("parts") or ():
                if not isinstance(part, dict) or part.get("thought"):
                    continue
                text = part.get("text")
                if isinstance(text, str) and text:
                    out.append(self._chunk(index, {"content": text}))
                call = _call_of(part)
                if call is not None:
                    position = self._tool_count.get(index, 0)
                    self._tool_count[index] = position + 1
                    out.append(self._chunk(index, {"tool_calls": [{"index": position, **call}]}))
            reason = candidate.get("finishReason")
            if isinstance(reason, str) and reason and reason != "FINISH_REASON_UNSPECIFIED":
                finish = finish_reason_from_gemini(reason, self._tool_count.get(index, 0) > 0)
                self._finished[index] = finish
                out.append(self._chunk(index, {}, finish))
        return b"".join(out)

    def end(self) -> bytes:
        if self.done:
            return b""
        if not self._finished:
            raise TranslationError("the Gemini stream ended before a finishReason")
        self.done = True
        out = b""
        if self.include_usage:
            out = chat_usage_chunk(self.id, self.created, self.model, self.usage or Usage())
        return out + SSE_DONE


class ChainedStream:
    """Two stream translators in a row: ``first``'s output events are fed to ``second``
    (e.g. Gemini → chat chunks → Anthropic messages events with ``ChatToMessagesStream``)."""

    def __init__(self, first: StreamTranslator, second: StreamTranslator) -> None:
        self.first = first
        self.second = second
        self._splitter = SSESplitter()

    def _pass(self, data: bytes) -> bytes:
        if not data:
            return b""
        return b"".join(self.second.feed(block) for block in self._splitter.feed(data))

    def feed(self, block: bytes) -> bytes:
        return self._pass(self.first.feed(block))

    def end(self) -> bytes:
        out = self._pass(self.first.end())
        tail = self._splitter.tail()
        if tail.strip():
            out += self.second.feed(tail + b"\n\n")
        return out + self.second.end()
