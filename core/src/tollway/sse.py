"""Server-sent events framing (WHATWG HTML §9.2) for streamed responses (SPEC §2).

The public home of what provider adapters and plugins need to read and write SSE streams
without re-serialising them:

* :class:`SSESplitter` cuts incoming bytes into complete event blocks, byte-identical to the
  input and independent of how the stream was chunked;
* :func:`event_fields` reads one block as ``(event name, data)``;
* :func:`format_event` writes one event; :func:`error_event` writes the gateway's terminal
  ``event: error`` frame for a stream that fails after its first byte.

Example::

    from tollway.sse import SSESplitter, event_fields

    splitter = SSESplitter()
    async for chunk in upstream:
        for block in splitter.feed(chunk):
            name, data = event_fields(block)
"""

from __future__ import annotations

from tollway._sse import SSESplitter, error_event, event_fields, format_event

__all__ = ["SSESplitter", "error_event", "event_fields", "format_event"]
