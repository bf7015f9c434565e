"""ConverseStream bodies (``application/vnd.amazon.eventstream``) → chat SSE events.

The binary frames are decoded by botocore's ``EventStreamBuffer`` (prelude and message CRCs
checked there); this module only reads the decoded headers and JSON payloads and drives
:class:`~tollway_provider_bedrock.translate.ConverseToChatStream`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, NamedTuple

import orjson

from tollway import UpstreamError, UpstreamHTTPError
from tollway.formats import TranslationError
from tollway_provider_bedrock.translate import ConverseToChatStream

__all__ = [
    "EXCEPTION_STATUS",
    "BedrockStreamError",
    "ConverseEvent",
    "EventStreamReader",
    "converse_stream_to_chat",
    "error_type_header",
]

#: A ConverseStream ``:exception-type`` → the HTTP status Bedrock gives the same error.
EXCEPTION_STATUS = {
    "validationException": 400,
    "accessDeniedException": 403,
    "resourceNotFoundException": 404,
    "modelTimeoutException": 408,
    "modelStreamErrorException": 424,
    "throttlingException": 429,
    "modelNotReadyException": 429,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
}


class ConverseEvent(NamedTuple):
    """One decoded frame: ``kind`` is its ``:message-type`` (``event``, ``exception`` or
    ``error``), ``name`` its ``:event-type`` / ``:exception-type`` / ``:error-code``."""

    kind: str
    name: str
    payload: dict[str, Any]


class BedrockStreamError(UpstreamError):
    """Bedrock reported an error inside a stream that already sent content."""

    reason = "stream_exception"


def error_type_header(exception_type: str) -> str:
    """The ``x-amzn-ErrorType`` value for a stream ``:exception-type``."""
    name = exception_type[:1].upper() + exception_type[1:]
    return f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"


def _header(headers: dict[str, Any], name: str) -> str:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


class EventStreamReader:
    """Feed it the body's bytes as they arrive; get back the complete frames, decoded."""

    def __init__(self) -> None:
        # botocore is imported with the first stream, not when the plugin loads.
        from botocore.eventstream import (  # type: ignore[import-untyped]
            EventStreamBuffer,
            ParserError,
        )

        self._buffer = EventStreamBuffer()
        self._parser_error: type[Exception] = ParserError
        self._pending = 0  # bytes fed but not yet part of a complete frame

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return self._pending

    def feed(self, data: bytes) -> list[ConverseEvent]:
        self._buffer.add_data(data)
        self._pending += len(data)
        out = []
        try:
            for message in self._buffer:
                self._pending -= message.prelude.total_length
                out.append(self._event(message))
        except self._parser_error as exc:
            raise TranslationError(
                f"Bedrock sent a corrupt event-stream frame ({type(exc).__name__}: {exc})"
            ) from None
        return out

    @staticmethod
    def _event(message: Any) -> ConverseEvent:
        headers = message.headers
        kind = _header(headers, ":message-type") or "event"
        if kind == "error":
            return ConverseEvent(
                kind,
                _header(headers, ":error-code") or "error",
                {"message": _header(headers, ":error-message")},
            )
        name = _header(headers, ":exception-type" if kind == "exception" else ":event-type")
        payload: Any = {}
        if message.payload:
            try:
                payload = orjson.loads(message.payload)
            except orjson.JSONDecodeError:
                raise TranslationError(
                    f"Bedrock sent a {name or kind} frame whose payload is not JSON: "
                    f"{message.payload[:120]!r}"
                ) from None
        if not isinstance(payload, dict):
            payload = {"value": payload}
        return ConverseEvent(kind, name, payload)


def _failure(event: ConverseEvent, started: bool) -> UpstreamError:
    message = str(event.payload.get("message") or event.payload.get("Message") or "")
    if started:
        return BedrockStreamError(
            f"Bedrock reported {event.name} mid-stream: {message or 'no message'}"
        )
    # Before any content: an error the dispatcher may fall back on (5xx, 429) or pass on.
    status = EXCEPTION_STATUS.get(event.name, 500)
    body = orjson.dumps({"message": message or f"Bedrock reported {event.name}"})
    headers = [
        ("content-type", "application/json"),
        ("x-amzn-ErrorType", error_type_header(event.name)),
    ]
    return UpstreamHTTPError(status, headers, body)


async def converse_stream_to_chat(
    chunks: AsyncIterable[bytes], translator: ConverseToChatStream
) -> AsyncIterator[bytes]:
    """Chat SSE bytes for a ConverseStream body arriving as ``chunks`` (any split).

    The role chunk is held back until the first content arrives, so an exception frame right
    after ``messageStart`` still counts as "before the first byte" (fallback-eligible). An
    exception frame after content raises :class:`BedrockStreamError` (the core ends the
    client's stream with its terminal error frame).
    """
    reader = EventStreamReader()
    held = b""
    started = False
    async for data in chunks:
        out: list[bytes] = []
        for event in reader.feed(data):
            if event.kind != "event":
                failure = _failure(event, started)
                if out:  # what arrived before the failure still reaches the client
                    yield b"".join(out)
                raise failure
            piece = translator.feed(event.name, event.payload)
            if not piece:
                continue
            if event.name == "messageStart" and not started:
                held += piece
                continue
            if held:
                out.append(held)
                held = b""
            out.append(piece)
            started = True
        if out:
            yield out[0] if len(out) == 1 else b"".join(out)
    if reader.pending:
        raise TranslationError(
            f"the Bedrock stream ended inside an event-stream frame ({reader.pending} bytes left)"
        )
    last = translator.end()
    if held or last:
        yield held + last
