"""Streams, both directions: :class:`MessagesToChatStream`, :class:`ChatToMessagesStream` and
:func:`reframe_sse`, which drives either over an upstream's byte chunks."""

from __future__ import annotations

import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Mapping,
)
from typing import Any, Protocol

import orjson

from tollway._sse import SSESplitter, event_fields
from tollway._types import Usage
from tollway.formats.helpers import _dumps_str, _obj
from tollway.formats.responses import _stop_for
from tollway.formats.shapes import (
    SSE_DONE,
    TranslationError,
    chat_chunk,
    chat_usage,
    chat_usage_chunk,
    finish_reason_from_stop,
    messages_usage,
    sse_event,
    usage_to_messages,
)

__all__ = [
    "ChatToMessagesStream",
    "MessagesToChatStream",
    "StreamTranslator",
    "reframe_sse",
]


class StreamTranslator(Protocol):
    """Re-frames one upstream SSE event block at a time into the client's wire format."""

    def feed(self, block: bytes) -> bytes:
        """The client bytes for one complete upstream event block (``b""``: nothing)."""
        ...

    def end(self) -> bytes:
        """The closing bytes once the upstream ended; raises if it ended too early."""
        ...


def _load_event(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise TranslationError(
            f"the upstream sent an event that is not valid JSON: {data[:120]!r}"
        ) from None
    if not isinstance(doc, dict):
        raise TranslationError(f"the upstream sent an event that is not an object: {data[:120]!r}")
    return doc


class MessagesToChatStream:
    """An Anthropic Messages event stream as OpenAI ``chat.completion.chunk`` events.

    The role arrives on the first delta (at ``message_start``), text deltas as ``content``,
    each ``tool_use`` block as a tool call (index, id, name) followed by its ``input_json_delta``
    fragments as ``arguments``; ``message_delta`` gives the finish chunk, ``message_stop`` the
    usage chunk (only when the client asked for ``stream_options.include_usage``) and
    ``data: [DONE]``. Pings, block stops and thinking deltas produce nothing. An upstream
    ``error`` event is passed on as is (its ``error`` key makes the openai SDK raise).
    """

    def __init__(
        self,
        *,
        include_usage: bool = False,
        on_usage: Callable[[Usage], None] | None = None,
        created: int | None = None,
        model: str = "",
    ) -> None:
        self.include_usage = include_usage
        self.on_usage = on_usage
        self.created = created if created is not None else int(time.time())
        self.id = ""
        self.model = model
        self.usage: Usage | None = None
        self.done = False
        self._tools: dict[Any, int] = {}  # Anthropic block index → OpenAI tool call index
        self._finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return chat_chunk(self.id, self.created, self.model, delta, finish)

    def _set_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage = messages_usage(usage, self.usage)
            if self.on_usage is not None:
                self.on_usage(self.usage)

    def feed(self, block: bytes) -> bytes:
        name, data = event_fields(block)
        if not data or self.done:
            return b""
        event = _load_event(data)
        kind = event.get("type") or name
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return b""
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                text = delta.get("text")
                return self._chunk({"content": text}) if text else b""
            if delta_type == "input_json_delta":
                index = self._tools.get(event.get("index"))
                partial = delta.get("partial_json")
                if index is None or not partial:
                    return b""
                return self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": partial}}]}
                )
            return b""  # thinking, signature and citation deltas have no chat equivalent
        if kind == "content_block_start":
            content_block = event.get("content_block")
            if not isinstance(content_block, dict):
                return b""
            block_type = content_block.get("type")
            if block_type == "tool_use":
                index = self._tools[event.get("index")] = len(self._tools)
                tool_input = content_block.get("input")
                arguments = _dumps_str(tool_input) if tool_input else ""
                return self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": content_block.get("id"),
                                "type": "function",
                                "function": {
                                    "name": content_block.get("name"),
                                    "arguments": arguments,
                                },
                            }
                        ]
                    }
                )
            if block_type == "text" and content_block.get("text"):
                return self._chunk({"content": content_block["text"]})
            return b""
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self.id = str(message.get("id") or "")
                self.model = str(message.get("model") or self.model)
                self._set_usage(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            self._set_usage(event.get("usage"))
            delta = event.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            if stop is None:
                return b""
            self._finish = finish_reason_from_stop(stop)
            return self._chunk({}, self._finish)
        if kind == "message_stop":
            self.done = True
            out = b""
            if self._finish is None:
                out = self._chunk({}, "stop")
            if self.include_usage:
                out += chat_usage_chunk(self.id, self.created, self.model, self.usage or Usage())
            return out + SSE_DONE
        if kind == "error":
            self.done = True
            return block if block.endswith(b"\n\n") else block + b"\n\n"
        return b""  # ping, content_block_stop, unknown events

    def end(self) -> bytes:
        if not self.done:
            raise TranslationError("the upstream stream ended before message_stop")
        return b""


class ChatToMessagesStream:
    """An OpenAI ``chat.completion.chunk`` stream as Anthropic Messages events.

    Every event carries an ``event:`` line (the anthropic SDK silently drops events without
    one). ``message_start`` comes with the first chunk; OpenAI reports usage only at the end, so
    its ``input_tokens`` is 0 there and the real numbers arrive in ``message_delta`` (the
    upstream request must ask for ``stream_options.include_usage``). Text and tool calls become
    content blocks with contiguous indexes: a text block, then one ``tool_use`` block per tool
    call with its arguments as ``input_json_delta`` fragments. The finish reason closes the open
    block; ``message_delta`` (stop reason + usage) and ``message_stop`` follow once the usage
    chunk, ``[DONE]`` or the end of the stream arrives.

    ``fallback_usage`` is asked for the usage when the stream ends without a usage chunk (an
    adapter that accounted the tokens on ``ctx.usage`` but sent no chunk): the Anthropic client
    then still sees the real numbers in ``message_delta`` instead of zeros.
    """

    def __init__(
        self,
        *,
        model: str = "",
        on_usage: Callable[[Usage], None] | None = None,
        fallback_usage: Callable[[], Usage | None] | None = None,
    ) -> None:
        self.model = model
        self.on_usage = on_usage
        self.fallback_usage = fallback_usage
        self.usage: Usage | None = None
        self.done = False
        self._started = False
        self._open: Any = None  # "text", an OpenAI tool index, or None
        self._open_index = -1
        self._next_index = 0
        self._tool_blocks: dict[Any, int] = {}
        self._finish: str | None = None
        self._refused = False

    def _start(self, doc: Mapping[str, Any]) -> bytes:
        self._started = True
        return sse_event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": str(doc.get("id") or "msg_tollway"),
                    "type": "message",
                    "role": "assistant",
                    "model": str(doc.get("model") or self.model),
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        )

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(
                sse_event(
                    "content_block_stop", {"type": "content_block_stop", "index": self._open_index}
                )
            )
            self._open = None

    def _open_block(self, out: list[bytes], key: Any, block: dict[str, Any]) -> int:
        self._close(out)
        index = self._open_index = self._next_index
        self._next_index += 1
        self._open = key
        out.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        return index

    def _text(self, out: list[bytes], text: str) -> None:
        if self._open != "text":
            self._open_block(out, "text", {"type": "text", "text": ""})
        out.append(
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._open_index,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )

    def _tool(self, out: list[bytes], call: Any) -> None:
        if not isinstance(call, dict):
            return
        key = ("tool", call.get("index", 0))
        function = _obj(call.get("function"))
        index = self._tool_blocks.get(key)
        if index is None:
            index = self._tool_blocks[key] = self._open_block(
                out,
                key,
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{len(self._tool_blocks)}",
                    "name": function.get("name") or "",
                    "input": {},
                },
            )
        arguments = function.get("arguments")
        if arguments:
            out.append(
                sse_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": arguments},
                    },
                )
            )

    def _final(self, out: list[bytes]) -> None:
        self._close(out)
        self.done = True
        stop = _stop_for(self._finish, self._refused, bool(self._tool_blocks))
        usage = self.usage
        if usage is None and self.fallback_usage is not None:
            usage = self.fallback_usage()
        out.append(
            sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": usage_to_messages(usage or Usage()),
                },
            )
        )
        out.append(sse_event("message_stop", {"type": "message_stop"}))

    def feed(self, block: bytes) -> bytes:
        _, data = event_fields(block)
        if not data:
            return b""
        if data.strip() == b"[DONE]":
            if self.done:
                return b""
            out: list[bytes] = []
            if not self._started:
                out.append(self._start({}))
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
            return sse_event(
                "error",
                {
                    "type": "error",
                    "error": {
                        "type": str(err.get("type") or "api_error"),
                        "message": str(err.get("message") or "the upstream reported an error"),
                    },
                },
            )
        out = []
        if not self._started:
            out.append(self._start(doc))
        choices = doc.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._text(out, content)
                refusal = delta.get("refusal")
                if isinstance(refusal, str) and refusal:
                    self._refused = True
                    self._text(out, refusal)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        self._tool(out, call)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self._finish = finish
                self._close(out)
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


async def reframe_sse(
    chunks: AsyncIterable[bytes], translator: StreamTranslator
) -> AsyncIterator[bytes]:
    """Translate an upstream SSE byte stream event by event, yielding as events complete.

    ``chunks`` is the upstream body (e.g. :func:`tollway.provider.relay_sse` without an
    inspector, which maps transport failures). An event left unterminated at the end is still
    translated; an upstream that ends before its terminal event raises
    :class:`TranslationError` (the core turns it into the terminal ``event: error`` frame).
    """
    splitter = SSESplitter()
    iterator = aiter(chunks)
    try:
        async for chunk in iterator:
            out = []
            for block in splitter.feed(chunk):
                translated = translator.feed(block)
                if translated:
                    out.append(translated)
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
        tail = splitter.tail()
        last = translator.feed(tail + b"\n\n") if tail.strip() else b""
        last += translator.end()
        if last:
            yield last
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
