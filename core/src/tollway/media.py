"""The audio wires' shared pieces: a transcription upload (multipart form) as the gateway reads
it and sends it on, binary bodies relayed as they arrive, and the usage an audio answer reports.

The core parses ``POST /v1/audio/transcriptions`` with werkzeug's multipart parser; its form
fields become ``ctx.body`` (only the documented ones, :data:`TRANSCRIPTION_FIELDS`) and the file
is ``ctx.stash[UPLOAD]``. A provider rebuilds the form for its upstream with :func:`form_body`.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import attrs
import orjson
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from tollway._context import StashKey
from tollway._errors import UpstreamConnectError, UpstreamTimeoutError
from tollway._types import Usage

__all__ = [
    "LIST_FIELDS",
    "TRANSCRIPTION_FIELDS",
    "UPLOAD",
    "FormError",
    "UploadedFile",
    "form_body",
    "parse_form",
    "relay_bytes",
    "transcription_usage",
]

#: The form fields of ``POST /v1/audio/transcriptions`` that are forwarded (OpenAI's documented
#: ones, ``file`` apart); anything else in the form is dropped.
TRANSCRIPTION_FIELDS = frozenset(
    {
        "model",
        "language",
        "prompt",
        "response_format",
        "temperature",
        "timestamp_granularities[]",
        "include[]",
        "chunking_strategy",
        "stream",
    }
)
#: Fields that may repeat (sent as lists).
LIST_FIELDS = frozenset({"timestamp_granularities[]", "include[]"})
_MAX_PARTS = 64
_MAX_FIELDS_BYTES = 1024 * 1024


@attrs.frozen
class UploadedFile:
    """The audio file of a transcription request."""

    filename: str
    content_type: str
    data: bytes


#: Where the core puts the uploaded file of a multipart request.
UPLOAD: StashKey[UploadedFile] = StashKey("tollway.upload")


class FormError(ValueError):
    """A multipart body that cannot be read; the message says what to fix."""


def parse_form(
    raw: bytes, content_type: str | None
) -> tuple[dict[str, str | list[str]], UploadedFile | None, list[str]]:
    """Read a ``multipart/form-data`` body: (the documented fields, the ``file`` part, the
    names of the fields dropped). Raises :class:`FormError`."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise FormError(
            f"the request body must be multipart/form-data (got {mimetype or 'no content type'}"
            "); send the audio as a form with a 'file' part and a 'model' field"
        )
    boundary = options.get("boundary", "")
    if not boundary:
        raise FormError("the multipart/form-data content type has no boundary")
    parser = MultiPartParser(
        stream_factory=lambda *_args, **_kw: io.BytesIO(),
        max_form_memory_size=_MAX_FIELDS_BYTES,
        max_form_parts=_MAX_PARTS,
    )
    try:
        form, files = parser.parse(io.BytesIO(raw), boundary.encode("latin-1"), len(raw))
    except Exception as exc:  # werkzeug raises ValueError / RequestEntityTooLarge subclasses
        raise FormError(f"the multipart body cannot be read: {exc}") from None
    fields: dict[str, str | list[str]] = {}
    dropped: list[str] = []
    for name in form:
        if name not in TRANSCRIPTION_FIELDS:
            dropped.append(name)
        elif name in LIST_FIELDS:
            fields[name] = form.getlist(name)
        else:
            fields[name] = form[name]
    upload: UploadedFile | None = None
    storage = files.get("file")
    if storage is not None:
        upload = UploadedFile(
            storage.filename or "audio",
            storage.content_type or "application/octet-stream",
            storage.stream.read(),
        )
    dropped.extend(n for n in files if n != "file")
    return fields, upload, dropped


async def form_body(
    fields: Mapping[str, Any], upload: UploadedFile, *, model: str
) -> tuple[bytes, str]:
    """The multipart body for the upstream, and its content type: ``file``, then the fields
    (``model`` set to the provider attempt's)."""
    writer = aiohttp.MultipartWriter("form-data")
    part = writer.append(upload.data, {"Content-Type": upload.content_type})
    part.set_content_disposition("form-data", name="file", filename=upload.filename)
    for name, value in fields.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            text = model if name == "model" else str(item)
            field = writer.append(text)
            field.set_content_disposition("form-data", name=name)
    if "model" not in fields:
        field = writer.append(model)
        field.set_content_disposition("form-data", name="model")
    return await writer.as_bytes(), writer.content_type


async def relay_bytes(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Relay an upstream body as its chunks arrive (binary audio: never buffered whole)."""
    try:
        async for data in resp.content.iter_any():
            if data:
                yield data
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeoutError("upstream stopped sending the body (read timeout)") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectError(f"upstream connection lost mid-body: {exc!r}") from exc
    finally:
        resp.close()


def transcription_usage(data: bytes) -> Usage | None:
    """The usage a transcription answer reports: ``usage.seconds`` (``type: "duration"``) or the
    ``duration`` of ``verbose_json`` as audio seconds, or ``usage`` tokens; None for a plain
    text answer (``text``, ``srt``, ``vtt``), which reports nothing."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    usage = doc.get("usage")
    seconds: Any = None
    if isinstance(usage, dict):
        if usage.get("type") == "tokens" or "input_tokens" in usage:
            return Usage(
                input_tokens=int(usage.get("input_tokens") or 0),
                output_tokens=int(usage.get("output_tokens") or 0),
            )
        seconds = usage.get("seconds")
    if seconds is None:
        seconds = doc.get("duration")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return Usage(audio_seconds=float(seconds))
    return None
