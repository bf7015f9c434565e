"""Newline-delimited JSON upstream streams, for provider adapters whose upstream does not
stream server-sent events.

:func:`relay_json_lines` reads an upstream body one JSON document per line, as the lines
arrive; the adapter turns each into the client's events (for a chat-native adapter,
:func:`tollway.formats.chat_chunk` and :data:`tollway.formats.SSE_DONE`). Example::

    from tollway.formats import SSE_DONE, chat_chunk
    from tollway.jsonlines import relay_json_lines

    async def events(resp):
        async for doc in relay_json_lines(resp):
            if doc["type"] == "delta":
                yield chat_chunk(id, created, model, {"content": doc["text"]})
        yield SSE_DONE

    return ProviderResult(200, [("content-type", "text/event-stream")],
                          events=events(resp), close=resp.close)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from tollway._errors import UpstreamConnectError, UpstreamTimeoutError
from tollway.formats import TranslationError

__all__ = ["MAX_LINE_BYTES", "JsonLineSplitter", "relay_json_lines"]

#: A line longer than this is refused (an upstream that never sends a newline).
MAX_LINE_BYTES = 8 * 1024 * 1024


async def relay_json_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[Any]:
    """Each JSON document of an NDJSON upstream body, parsed, as its line completes.

    Blank lines are skipped; a last line without its newline still counts. A transport failure
    raises :class:`~tollway.UpstreamConnectError` (:class:`~tollway.UpstreamTimeoutError` on
    the read timeout) and a line that is not JSON :class:`~tollway.formats.TranslationError`:
    after the first byte the gateway turns either into the stream's terminal ``event: error``.
    The response is closed when the iteration ends, however it ends.
    """
    splitter = JsonLineSplitter()
    try:
        async for data in resp.content.iter_any():
            for doc in splitter.feed(data):
                yield doc
        for doc in splitter.end():
            yield doc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeoutError("upstream stopped sending lines (read timeout)") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectError(f"upstream connection lost mid-stream: {exc!r}") from exc
    finally:
        resp.close()


class JsonLineSplitter:
    """Cuts newline-delimited JSON bytes into parsed documents, however the bytes are chunked
    (pure: what :func:`relay_json_lines` uses, for adapters that read bodies another way)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Any]:
        """The documents completed by ``data``. Raises :class:`TranslationError` for a line
        that is not JSON or longer than :data:`MAX_LINE_BYTES`."""
        *lines, self._pending = (self._pending + data).split(b"\n")
        if len(self._pending) > MAX_LINE_BYTES:
            raise TranslationError(
                f"the upstream sent a line longer than {MAX_LINE_BYTES} bytes; it does not "
                "look like newline-delimited JSON"
            )
        return [_load(line) for line in lines if line.strip()]

    def end(self) -> list[Any]:
        """The last document, when the body ended without its newline."""
        tail, self._pending = self._pending, b""
        return [_load(tail)] if tail.strip() else []


def _load(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        raise TranslationError(
            f"the upstream sent a line that is not JSON: {line[:120]!r}"
        ) from None
