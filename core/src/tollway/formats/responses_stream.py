"""The Responses API stream from the chat hub: :class:`ChatToResponsesStream`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tollway._sse import event_fields
from tollway._types import Usage
from tollway.formats.helpers import _obj, new_tool_call_id
from tollway.formats.responses_output import (
    _custom_tool_call_item,
    _function_call_item,
    _message_item,
    _new_item_id,
    _new_response_id,
    _response_object,
    _response_status,
    _text_part,
)
from tollway.formats.responses_tools import custom_tool_input, custom_tool_names
from tollway.formats.shapes import TranslationError, chat_usage, sse_event, usage_to_responses
from tollway.formats.streams import _load_event

__all__ = ["ChatToResponsesStream"]

#: Content part type → (its text field, its delta and done event names).
_PARTS = {
    "output_text": ("text", "response.output_text.delta", "response.output_text.done"),
    "refusal": ("refusal", "response.refusal.delta", "response.refusal.done"),
}


class _Message:
    """The open ``message`` output item: its content parts, in order of first arrival."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = _new_item_id("msg_")
        self.parts: list[list[str]] = []  # [kind, text]

    def part(self, kind: str) -> tuple[int, list[str], bool]:
        for i, part in enumerate(self.parts):
            if part[0] == kind:
                return i, part, False
        self.parts.append([kind, ""])
        return len(self.parts) - 1, self.parts[-1], True

    def content(self) -> list[dict[str, Any]]:
        return [_part(kind, text) for kind, text in self.parts]


class _Call:
    """An open ``function_call`` output item (one chat tool call), or a ``custom_tool_call``
    one when it calls a custom tool (its arguments kept until it closes: only then is their
    ``input`` string known)."""

    def __init__(self, index: int, call_id: str, name: str, custom: bool) -> None:
        self.index = index
        self.custom = custom
        self.id = _new_item_id("ctc_" if custom else "fc_")
        self.call_id = call_id
        self.name = name
        self.arguments = ""

    def item(self, status: str) -> dict[str, Any]:
        if self.custom:
            tool_input = custom_tool_input(self.arguments) if status == "completed" else ""
            return _custom_tool_call_item(self.id, status, self.call_id, self.name, tool_input)
        return _function_call_item(self.id, status, self.call_id, self.name, self.arguments)


def _part(kind: str, text: str) -> dict[str, Any]:
    return _text_part(text) if kind == "output_text" else {"type": "refusal", "refusal": text}


class ChatToResponsesStream:
    """An OpenAI ``chat.completion.chunk`` stream as the Responses API's event stream.

    Every event carries its ``event:`` line and a ``sequence_number`` from 0, as OpenAI sends
    them: ``response.created`` and ``response.in_progress`` with the first chunk; text opens a
    ``message`` item (``response.output_item.added``, ``response.content_part.added``, then
    ``response.output_text.delta`` per chunk; a refusal gets a ``refusal`` part); each tool
    call opens a ``function_call`` item whose arguments arrive as
    ``response.function_call_arguments.delta`` (the first tool call closes the message item
    before it). A call of one of the request's custom tools opens a ``custom_tool_call`` item
    instead: its arguments are kept, and their ``input`` string is sent when it closes, as one
    ``response.custom_tool_call_input.delta`` and ``…input.done``. The finish reason closes
    every open item in output order (``…text.done``, ``…arguments.done`` or ``…input.done``,
    ``response.content_part.done``, ``response.output_item.done``);
    ``response.completed`` (``response.incomplete`` after a ``length`` or ``content_filter``
    finish) follows with the usage once the usage chunk, ``[DONE]`` or the end of the stream
    arrives (the upstream request must ask for ``stream_options.include_usage``). An
    upstream ``{"error": …}`` chunk becomes an ``error`` event that also keeps the ``error``
    object (the openai SDK raises on it).
    """

    def __init__(
        self,
        *,
        model: str = "",
        request: Mapping[str, Any] | None = None,
        on_usage: Callable[[Usage], None] | None = None,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        self.model = model
        self.request = request
        self._custom = custom_tool_names(request)
        self.on_usage = on_usage
        self.id = response_id or _new_response_id()
        self.created_at = created_at if created_at is not None else int(time.time())
        self.usage: Usage | None = None
        self.done = False
        self._seq = 0
        self._started = False
        self._next_index = 0
        self._message: _Message | None = None
        self._calls: dict[Any, _Call] = {}  # chat tool call index → its item
        self._open: list[Any] = []  # the open items, in output order
        self._closed: dict[int, dict[str, Any]] = {}  # output index → the finished item
        self._finish: str | None = None

    # --- writing events --------------------------------------------------------------------

    def _event(self, out: list[bytes], kind: str, **fields: Any) -> None:
        out.append(sse_event(kind, {"type": kind, "sequence_number": self._seq, **fields}))
        self._seq += 1

    def _response(self, status: str, usage: Usage | None = None) -> dict[str, Any]:
        incomplete = None
        if status != "in_progress":
            status, incomplete = _response_status(self._finish)
        return _response_object(
            response_id=self.id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=[self._closed[i] for i in sorted(self._closed)],
            usage=usage_to_responses(usage) if usage is not None else None,
            request=self.request,
            incomplete_details=incomplete,
        )

    def _start(self, out: list[bytes], doc: Mapping[str, Any]) -> None:
        self._started = True
        self.model = str(doc.get("model") or self.model)
        for kind in ("response.created", "response.in_progress"):
            self._event(out, kind, response=self._response("in_progress"))

    def _take_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    # --- items -----------------------------------------------------------------------------

    def _text(self, out: list[bytes], kind: str, delta: str) -> None:
        message = self._message
        if message is None:
            message = self._message = _Message(self._take_index())
            self._open.append(message)
            self._event(
                out,
                "response.output_item.added",
                output_index=message.index,
                item=_message_item(message.id, "in_progress", []),
            )
        content_index, part, new = message.part(kind)
        if new:
            self._event(
                out,
                "response.content_part.added",
                item_id=message.id,
                output_index=message.index,
                content_index=content_index,
                part=_part(kind, ""),
            )
        part[1] += delta
        fields: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
        self._event(
            out,
            _PARTS[kind][1],
            item_id=message.id,
            output_index=message.index,
            content_index=content_index,
            delta=delta,
            **fields,
        )

    def _tool(self, out: list[bytes], raw: Any) -> None:
        if not isinstance(raw, dict):
            return
        function = _obj(raw.get("function"))
        key = raw.get("index", 0)
        call = self._calls.get(key)
        if call is None:
            if self._message is not None:  # text before tool calls: its item is complete
                self._close(out, self._message)
            name = str(function.get("name") or "")
            call = self._calls[key] = _Call(
                self._take_index(),
                str(raw.get("id") or new_tool_call_id()),
                name,
                name in self._custom,
            )
            self._open.append(call)
            item = call.item("in_progress")
            self._event(
                out,
                "response.output_item.added",
                output_index=call.index,
                item=item if call.custom else {**item, "arguments": ""},
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments += arguments
            if call.custom:
                return  # its input is sent when it closes
            self._event(
                out,
                "response.function_call_arguments.delta",
                item_id=call.id,
                output_index=call.index,
                delta=arguments,
            )

    def _close(self, out: list[bytes], item: _Message | _Call) -> None:
        """Finish one open item: its parts' or arguments' done events, then the item's."""
        status, _ = _response_status(self._finish)
        if isinstance(item, _Message):
            for content_index, (kind, text) in enumerate(item.parts):
                field, _, done = _PARTS[kind]
                fields: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
                self._event(
                    out,
                    done,
                    item_id=item.id,
                    output_index=item.index,
                    content_index=content_index,
                    **{field: text},
                    **fields,
                )
                self._event(
                    out,
                    "response.content_part.done",
                    item_id=item.id,
                    output_index=item.index,
                    content_index=content_index,
                    part=_part(kind, text),
                )
            finished = _message_item(item.id, status, item.content())
            self._message = None
        elif item.custom:
            finished = item.item("completed")
            if finished["input"]:
                self._event(
                    out,
                    "response.custom_tool_call_input.delta",
                    item_id=item.id,
                    output_index=item.index,
                    delta=finished["input"],
                )
            self._event(
                out,
                "response.custom_tool_call_input.done",
                item_id=item.id,
                output_index=item.index,
                input=finished["input"],
            )
        else:
            self._event(
                out,
                "response.function_call_arguments.done",
                item_id=item.id,
                output_index=item.index,
                name=item.name,
                arguments=item.arguments,
            )
            finished = item.item("completed")
        self._open.remove(item)
        self._closed[item.index] = finished
        self._event(out, "response.output_item.done", output_index=item.index, item=finished)

    def _close_items(self, out: list[bytes]) -> None:
        for item in list(self._open):
            self._close(out, item)

    def _final(self, out: list[bytes]) -> None:
        self._close_items(out)
        self.done = True
        response = self._response("completed", self.usage or Usage())
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        self._event(out, kind, response=response)

    # --- the translator --------------------------------------------------------------------

    def feed(self, block: bytes) -> bytes:
        _, data = event_fields(block)
        if not data:
            return b""
        out: list[bytes] = []
        if data.strip() == b"[DONE]":
            if self.done:
                return b""
            if not self._started:
                self._start(out, {})
            self._final(out)
            return b"".join(out)
        doc = _load_event(data)
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.usage = chat_usage(usage)
            if self.on_usage is not None:
                self.on_usage(self.usage)
        if self.done:
            return b""
        error = doc.get("error")
        if error:
            self.done = True
            err = error if isinstance(error, dict) else {"message": str(error)}
            message = str(err.get("message") or "the upstream reported an error")
            code = str(err.get("code") or err.get("type") or "api_error")
            self._event(
                out,
                "error",
                code=code,
                message=message,
                param=err.get("param"),
                error={"type": str(err.get("type") or "api_error"), "message": message},
            )
            return b"".join(out)
        if not self._started:
            self._start(out, doc)
        choices = doc.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for field, kind in (("content", "output_text"), ("refusal", "refusal")):
                    text = delta.get(field)
                    if isinstance(text, str) and text:
                        self._text(out, kind, text)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        self._tool(out, call)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish and self._finish is None:
                self._finish = finish
                self._close_items(out)
        if self._finish is not None and self.usage is not None:
            self._final(out)
        return b"".join(out)

    def end(self) -> bytes:
        if self.done:
            return b""
        if self._finish is None:
            raise TranslationError("the upstream stream ended before its finish_reason")
        out: list[bytes] = []
        self._final(out)
        return b"".join(out)
