"""OpenAI chat ⇄ Bedrock Converse translation (pure functions, no I/O).

Chat is the hub format (docs/translation.md): the adapter serves ``/v1/chat/completions`` with
these functions and ``/v1/messages`` by composing them with the core's chat ⇄ messages
translators.

- Requests: :func:`chat_request_to_converse` → a Converse body (the model id travels in the URL)
  and the chat parameters left out (reported in ``X-LangWatch-Params-Dropped``). A request that
  cannot be sent faithfully (an ``http(s)`` image URL, tool arguments that are not a JSON
  object, …) raises :class:`~tollway.BadRequest` naming the field.
- Responses: :func:`converse_response_to_chat`, :func:`converse_usage`,
  :func:`finish_reason_from_converse`.
- Streams: :class:`ConverseToChatStream` turns decoded ConverseStream events (``:event-type``
  and JSON payload) into ``chat.completion.chunk`` SSE events.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tollway import BadRequest, Usage, quote_input
from tollway.formats import (
    CHAT_COMMON_PARAMS,
    SSE_DONE,
    DroppedParams,
    Translated,
    TranslationError,
    assistant_tool_calls,
    chat_chunk,
    chat_messages,
    chat_usage_chunk,
    content_parts,
    dropped_chat_params,
    finish_reason_from_stop,
    image_part_url,
    new_chat_completion_id,
    parse_data_url,
    part_text,
    text_of_parts,
    tool_call_arguments,
    tool_functions,
    usage_to_chat,
)

__all__ = [
    "ConverseToChatStream",
    "chat_request_to_converse",
    "converse_response_to_chat",
    "converse_usage",
    "finish_reason_from_converse",
]

_HANDLED = CHAT_COMMON_PARAMS | {"top_k", "user"}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
#: Converse's own ``stopReason`` values; the others are Anthropic's (``end_turn``, ``tool_use``,
#: ``max_tokens``, …) and map as in :func:`tollway.formats.finish_reason_from_stop`.
_FINISH = {"guardrail_intervened": "content_filter", "content_filtered": "content_filter"}
#: Bedrock caps ``requestMetadata`` values at this length.
_MAX_METADATA_VALUE = 256
_DOC_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9\-\(\)\[\] ]+")


def finish_reason_from_converse(stop_reason: Any) -> str:
    """The OpenAI ``finish_reason`` for a Converse ``stopReason`` (unknown → ``stop``)."""
    reason = stop_reason if isinstance(stop_reason, str) else None
    return _FINISH.get(reason or "") or finish_reason_from_stop(reason)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def converse_usage(usage: Mapping[str, Any]) -> Usage:
    """Usage of a Converse answer (``inputTokens`` exclude cache reads and writes)."""
    return Usage(
        input_tokens=_int(usage.get("inputTokens")),
        output_tokens=_int(usage.get("outputTokens")),
        cache_read_input_tokens=_int(usage.get("cacheReadInputTokens")),
        cache_creation_input_tokens=_int(usage.get("cacheWriteInputTokens")),
    )


# --------------------------------------------------------------------------- requests


def _texts(content: Any, where: str) -> list[str]:
    """The texts of a string or a list of text parts (system, tool and assistant content)."""
    return text_of_parts(content, where, upstream="Bedrock")


def _data_url(url: str, where: str) -> tuple[str, str]:
    """``(media type, base64 data)`` of a base64 ``data:`` URL; anything else is a 400."""
    parsed = parse_data_url(url, where, upstream="Bedrock")
    if parsed is None:
        raise BadRequest(
            f"{where}: Bedrock cannot fetch URLs ({url[:60]!r}); send the image inline as a "
            "base64 data URL (data:image/png;base64,…)",
            param=where,
        )
    return parsed[0].lower(), parsed[1]


def _user_blocks(content: Any, where: str, dropped: DroppedParams) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, (part_where, part, kind) in enumerate(content_parts(content, where)):
        if kind == "text":
            text = part_text(part, part_where)
            if text:
                blocks.append({"text": text})
        elif kind == "image_url":
            url = image_part_url(part, part_where, dropped)
            media, data = _data_url(url, f"{part_where}.image_url.url")
            fmt = _IMAGE_FORMATS.get(media)
            if fmt is None:
                raise BadRequest(
                    f"{part_where}.image_url.url: Bedrock takes png, jpeg, gif or webp images, "
                    f"not {quote_input(media)}",
                    param=part_where,
                )
            blocks.append({"image": {"format": fmt, "source": {"bytes": data}}})
        elif kind == "file":
            raw_file = part.get("file")
            file: dict[str, Any] = raw_file if isinstance(raw_file, dict) else {}
            data_url = file.get("file_data")
            if isinstance(data_url, str) and data_url.startswith("data:application/pdf;"):
                _, data = _data_url(data_url, f"{part_where}.file.file_data")
                name = _DOC_NAME_UNSAFE.sub(" ", str(file.get("filename") or "")).split()
                blocks.append(
                    {
                        "document": {
                            "format": "pdf",
                            "name": " ".join(name)[:200] or f"document {j + 1}",
                            "source": {"bytes": data},
                        }
                    }
                )
            else:
                dropped.add("content.file")
        else:
            dropped.add(f"content.{kind}")
    return blocks


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"text": t} for t in _texts(message.get("content"), f"{where}.content") if t
    ]
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal and not blocks:
        blocks.append({"text": refusal})
    for call_where, call, function in assistant_tool_calls(message, where):
        name, call_id = function.get("name"), call.get("id")
        if not isinstance(name, str) or not isinstance(call_id, str):
            raise BadRequest(f"{call_where} needs an id and function.name", param=call_where)
        arguments = function.get("arguments")
        tool_input = tool_call_arguments(arguments, call_where, upstream="Bedrock")
        blocks.append({"toolUse": {"toolUseId": call_id, "name": name, "input": tool_input}})
    return blocks


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a message, merging it into the previous one of the same role (Converse requires
    user and assistant turns to alternate)."""
    if not blocks:
        return
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _messages(
    messages: list[Any], dropped: DroppedParams
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for where, role, message in chat_messages(messages, dropped):
        if role in ("system", "developer"):
            system.extend(
                {"text": t} for t in _texts(message.get("content"), f"{where}.content") if t
            )
        elif role == "user":
            _append(out, "user", _user_blocks(message.get("content"), where, dropped))
        elif role == "assistant":
            _append(out, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            texts = _texts(message.get("content"), f"{where}.content")
            result = {
                "toolUseId": message["tool_call_id"],
                "content": [{"text": t} for t in texts if t],
            }
            _append(out, "user", [{"toolResult": result}])
        else:  # function
            raise BadRequest(
                f"{where}: legacy 'function' messages cannot be sent to Bedrock; use tools and "
                "'tool' messages",
                param=where,
            )
    return system, out


def _tools(tools: list[Any], dropped: DroppedParams) -> list[dict[str, Any]]:
    out = []
    for function in tool_functions(tools, dropped):
        schema = function.get("parameters")
        if not isinstance(schema, dict):
            schema = {"type": "object", "properties": {}}
        spec: dict[str, Any] = {"name": function["name"]}
        description = function.get("description")
        if isinstance(description, str) and description:
            spec["description"] = description
        spec["inputSchema"] = {"json": schema}
        if function.get("strict"):
            dropped.add("tools.function.strict")
        out.append({"toolSpec": spec})
    return out


def _tool_choice(choice: Any, dropped: DroppedParams) -> dict[str, Any] | None:
    """The Converse ``toolChoice`` (None: leave it out, which means auto)."""
    if choice is None or choice == "auto":
        return {"auto": {}} if choice == "auto" else None
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"tool": {"name": name}}
    dropped.add("tool_choice")
    return None


def _uses_tools(messages: list[dict[str, Any]]) -> bool:
    return any(
        "toolUse" in block or "toolResult" in block
        for message in messages
        for block in message["content"]
    )


def chat_request_to_converse(
    body: Mapping[str, Any], *, model: str, top_k_field: bool | None = None
) -> Translated:
    """An OpenAI chat request as a Converse request body for ``model``.

    ``system``/``developer`` messages become ``system`` blocks; user and assistant content
    becomes content blocks (text, base64 images, PDF files, ``toolUse``); ``tool`` messages
    become ``toolResult`` blocks in a user turn; consecutive turns of one role are merged.
    ``max_completion_tokens``/``max_tokens``, ``temperature``, ``top_p`` and ``stop`` go to
    ``inferenceConfig``; tools and ``tool_choice`` to ``toolConfig`` (``"none"`` leaves the
    tools out unless the history holds tool blocks, and is reported dropped); ``user`` to
    ``requestMetadata.user``. ``top_k`` goes to ``additionalModelRequestFields`` when
    ``top_k_field`` is true (default: for Anthropic Claude model ids), else it is dropped.
    """
    dropped = dropped_chat_params(body, _HANDLED)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be an array", param="messages")
    system, converted = _messages(messages, dropped)
    out: dict[str, Any] = {"messages": converted}
    if system:
        out["system"] = system

    inference: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    for name, field in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(name) is not None:
            inference[field] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        inference["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        inference["stopSequences"] = stop
    if inference:
        out["inferenceConfig"] = inference

    top_k = body.get("top_k")
    if top_k is not None:
        if top_k_field is None:
            top_k_field = "anthropic.claude" in model
        if top_k_field:
            out["additionalModelRequestFields"] = {"top_k": top_k}
        else:
            dropped.add("top_k")

    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    specs = _tools(tools, dropped) if tools else []
    if specs:
        choice = body.get("tool_choice")
        if choice == "none":
            dropped.add("tool_choice")
            if _uses_tools(converted):
                # Bedrock refuses toolUse/toolResult blocks without a toolConfig.
                out["toolConfig"] = {"tools": specs}
        else:
            config: dict[str, Any] = {"tools": specs}
            converse_choice = _tool_choice(choice, dropped)
            if converse_choice is not None:
                config["toolChoice"] = converse_choice
            out["toolConfig"] = config
    elif body.get("tool_choice") not in (None, "none", "auto"):
        dropped.add("tool_choice")

    user = body.get("user")
    if isinstance(user, str) and user:
        if len(user) <= _MAX_METADATA_VALUE:
            out["requestMetadata"] = {"user": user}
        else:
            dropped.add("user")
    return Translated(out, dropped.result())


# --------------------------------------------------------------------------- responses


def converse_response_to_chat(
    doc: Mapping[str, Any], *, model: str, created: int | None = None, id_: str | None = None
) -> dict[str, Any]:
    """A Converse answer as an OpenAI ``chat.completion``.

    Text blocks join into ``content``; ``toolUse`` blocks become ``tool_calls`` (their
    ``input`` serialised as ``arguments``); reasoning and other blocks have no chat field and
    are left out.
    """
    output = doc.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    if not isinstance(message, dict):
        raise TranslationError(
            "Bedrock answered without output.message, so there is no chat completion to return"
        )
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        tool = block.get("toolUse")
        if isinstance(tool, dict):
            calls.append(
                {
                    "id": str(tool.get("toolUseId") or ""),
                    "type": "function",
                    "function": {
                        "name": str(tool.get("name") or ""),
                        "arguments": orjson.dumps(tool.get("input") or {}).decode(),
                    },
                }
            )
    chat_message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        chat_message["tool_calls"] = calls
    usage = doc.get("usage")
    return {
        "id": id_ or new_chat_completion_id(),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": chat_message,
                "logprobs": None,
                "finish_reason": finish_reason_from_converse(doc.get("stopReason")),
            }
        ],
        "usage": usage_to_chat(converse_usage(usage if isinstance(usage, dict) else {})),
    }


# --------------------------------------------------------------------------- streams


class ConverseToChatStream:
    """ConverseStream events as OpenAI ``chat.completion.chunk`` SSE events.

    ``messageStart`` gives the role chunk; text deltas become ``content``; a ``toolUse`` block
    start becomes a tool call (index, id, name) and its ``toolUse.input`` string deltas its
    ``arguments``; ``messageStop`` gives the finish chunk; ``metadata`` (usage) gives the usage
    chunk (only with ``include_usage``) and ``data: [DONE]``. Reasoning deltas, block stops and
    unknown events produce nothing.
    """

    def __init__(
        self,
        *,
        model: str = "",
        include_usage: bool = False,
        on_usage: Callable[[Usage], None] | None = None,
        created: int | None = None,
        id_: str | None = None,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.on_usage = on_usage
        self.created = created if created is not None else int(time.time())
        self.id = id_ or new_chat_completion_id()
        self.usage: Usage | None = None
        self.done = False
        self._started = False
        self._finish: str | None = None
        self._tools: dict[Any, int] = {}  # contentBlockIndex → chat tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return chat_chunk(self.id, self.created, self.model, delta, finish)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def _tool_index(self, block_index: Any) -> int:
        index = self._tools.get(block_index)
        if index is None:
            index = self._tools[block_index] = len(self._tools)
        return index

    def feed(self, event_type: str, payload: Mapping[str, Any]) -> bytes:
        """The chat SSE bytes for one decoded ConverseStream event (``b""``: nothing)."""
        if self.done:
            return b""
        if event_type == "messageStart":
            return self._start()
        if event_type == "contentBlockDelta":
            delta = payload.get("delta")
            if not isinstance(delta, dict):
                return b""
            text = delta.get("text")
            if isinstance(text, str):
                return self._start() + self._chunk({"content": text}) if text else b""
            tool = delta.get("toolUse")
            if isinstance(tool, dict):
                arguments = tool.get("input")
                if not isinstance(arguments, str) or not arguments:
                    return b""
                index = self._tool_index(payload.get("contentBlockIndex"))
                return self._start() + self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}
                )
            return b""  # reasoningContent, citations: no chat equivalent
        if event_type == "contentBlockStart":
            start = payload.get("start")
            tool = start.get("toolUse") if isinstance(start, dict) else None
            if not isinstance(tool, dict):
                return b""
            index = self._tool_index(payload.get("contentBlockIndex"))
            return self._start() + self._chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": str(tool.get("toolUseId") or ""),
                            "type": "function",
                            "function": {"name": str(tool.get("name") or ""), "arguments": ""},
                        }
                    ]
                }
            )
        if event_type == "messageStop":
            if self._finish is not None:
                return b""
            self._finish = finish_reason_from_converse(payload.get("stopReason"))
            return self._start() + self._chunk({}, self._finish)
        if event_type == "metadata":
            usage = payload.get("usage")
            if isinstance(usage, dict):
                self.usage = converse_usage(usage)
                if self.on_usage is not None:
                    self.on_usage(self.usage)
            if self._finish is None:
                return b""  # metadata before messageStop: wait for it
            return self._close()
        return b""  # contentBlockStop, unknown events

    def _close(self) -> bytes:
        self.done = True
        out = b""
        if self.include_usage and self.usage is not None:
            out = chat_usage_chunk(self.id, self.created, self.model, self.usage)
        return out + SSE_DONE

    def end(self) -> bytes:
        """The closing bytes once the upstream ended; raises if it ended before messageStop."""
        if self.done:
            return b""
        if self._finish is None:
            raise TranslationError("the Bedrock stream ended before its messageStop event")
        return self._close()
