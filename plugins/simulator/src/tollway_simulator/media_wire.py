"""The OpenAI wires beyond chat, responses and embeddings: moderations, image generation,
speech and transcription.

Routes::

    POST /v1/moderations           {"input", "model"?} → a moderation per input (never flagged,
                                   unless the text contains "flag-me")
    POST /v1/images/generations    {"prompt", "model", "n"?} → ``n`` tiny PNGs (b64_json); the
                                   ``gpt-image-*`` models report token usage as OpenAI's do
    POST /v1/audio/speech          {"model", "input", "response_format"?} → a WAV of silence,
                                   one second per 15 characters (at least one), sent in 4 KiB
                                   chunks with the format's content type (``audio/mpeg`` for
                                   the default ``mp3``, as OpenAI labels it)
    POST /v1/audio/transcriptions  multipart (``file``, ``model``, ``response_format``?) → the
                                   greeting as ``json`` (with ``usage.seconds``: the WAV's
                                   duration, else one second per 16 KiB), ``verbose_json``
                                   (``duration``), ``text``, ``srt`` or ``vtt``
    POST /v1/realtime/client_secrets {"session": {"model", …}, "expires_after"?} → an
                                   ``ek_…`` secret expiring after ``expires_after.seconds``
                                   (600 by default) and the session echoed

Answers are deterministic; errors have OpenAI's shape.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tollway.media import FormError, parse_form
from tollway_simulator.common import (
    GREETING,
    Call,
    JsonReply,
    Reply,
    StreamReply,
    dumps,
    hex_id,
    input_tokens_of,
)
from tollway_simulator.errors import error_reply, provider_headers

if TYPE_CHECKING:
    from tollway_simulator.server import Simulator

#: A 1x1 transparent PNG: every generated image.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
IMAGE_OUTPUT_TOKENS = 272
MAX_IMAGES = 10
_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


def _bad(message: str, param: str | None = None) -> JsonReply:
    return error_reply("openai", 400, message, "invalid_request_error", None, param)


def _ok(obj: Any) -> JsonReply:
    return JsonReply(200, dumps(obj), provider_headers("openai"))


def moderations(call: Call) -> Reply:
    req = call.data
    raw = req.get("input")
    if raw is None:
        return _bad("you must provide an input parameter", "input")
    inputs = raw if isinstance(raw, list) else [raw]
    results = []
    for item in inputs:
        text = item if isinstance(item, str) else str(item.get("text", ""))
        flagged = "flag-me" in text
        results.append(
            {
                "flagged": flagged,
                "categories": {c: flagged and c == "harassment" for c in _CATEGORIES},
                "category_scores": {
                    c: (0.99 if flagged and c == "harassment" else 0.0001) for c in _CATEGORIES
                },
            }
        )
    return _ok(
        {
            "id": hex_id("modr-"),
            "model": req.get("model") or "omni-moderation-latest",
            "results": results,
        }
    )


def images(call: Call) -> Reply:
    req = call.data
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _bad("you must provide a prompt parameter", "prompt")
    n = req.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        return _bad(f"Invalid 'n': must be an integer in [1, {MAX_IMAGES}].", "n")
    model = str(req.get("model") or "dall-e-2")
    image = base64.b64encode(PNG_1X1).decode()
    out: dict[str, Any] = {
        "created": int(time.time()),
        "data": [{"b64_json": image, "revised_prompt": prompt} for _ in range(n)],
    }
    if model.startswith("gpt-image"):
        tokens = input_tokens_of(call.body)
        out["usage"] = {
            "input_tokens": tokens,
            "output_tokens": IMAGE_OUTPUT_TOKENS * n,
            "total_tokens": tokens + IMAGE_OUTPUT_TOKENS * n,
            "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0},
        }
    return _ok(out)


SAMPLE_RATE = 8000
CHARS_PER_SECOND = 15
AUDIO_CHUNK = 4096
_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def silence_wav(seconds: int) -> bytes:
    """A mono 8-bit 8 kHz WAV of ``seconds`` of silence."""
    frames = SAMPLE_RATE * seconds
    header = b"RIFF" + struct.pack("<I", 36 + frames) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE, 1, 8)
    return header + fmt + b"data" + struct.pack("<I", frames) + b"\x80" * frames


def wav_seconds(data: bytes) -> float | None:
    """The duration of a WAV made by :func:`silence_wav` (or any plain PCM WAV), else None."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    byte_rate = struct.unpack("<I", data[28:32])[0]
    size = struct.unpack("<I", data[40:44])[0]
    return size / byte_rate if byte_rate else None


def speech(call: Call) -> Reply:
    req = call.data
    text = req.get("input")
    if not isinstance(text, str) or not text:
        return _bad("you must provide an input parameter", "input")
    fmt = req.get("response_format", "mp3")
    content_type = _AUDIO_TYPES.get(fmt) if isinstance(fmt, str) else None
    if content_type is None:
        return _bad(f"Invalid 'response_format': {fmt!r}.", "response_format")
    audio = silence_wav(max(1, len(text) // CHARS_PER_SECOND))
    chunks = [audio[i : i + AUDIO_CHUNK] for i in range(0, len(audio), AUDIO_CHUNK)]
    return StreamReply(chunks, provider_headers("openai"), content_type=content_type)


def transcription(form: Any, upload: bytes | None) -> Reply:
    if upload is None:
        return _bad("you must provide a file parameter", "file")
    if not form.get("model"):
        return _bad("you must provide a model parameter", "model")
    seconds = wav_seconds(upload) or max(1.0, len(upload) / 16384)
    fmt = form.get("response_format", "json")
    headers = provider_headers("openai")
    body: dict[str, Any]
    if fmt == "json":
        body = {"text": GREETING, "usage": {"type": "duration", "seconds": round(seconds)}}
        return JsonReply(200, dumps(body), headers)
    if fmt == "verbose_json":
        body = {
            "task": "transcribe",
            "language": "english",
            "duration": seconds,
            "text": GREETING,
            "segments": [],
        }
        return JsonReply(200, dumps(body), headers)
    if fmt == "text":
        return JsonReply(200, GREETING.encode() + b"\n", headers, "text/plain; charset=utf-8")
    if fmt in ("srt", "vtt"):
        sep = "," if fmt == "srt" else "."
        cue = f"00:00:00{sep}000 --> 00:00:01{sep}000"
        head = "1\n" if fmt == "srt" else "WEBVTT\n\n"
        return JsonReply(200, f"{head}{cue}\n{GREETING}\n".encode(), headers, "text/plain")
    return _bad(f"Invalid 'response_format': {fmt!r}.", "response_format")


def realtime_client_secret(call: Call) -> Reply:
    session = call.data.get("session")
    if not isinstance(session, dict) or not session.get("model"):
        return _bad("Missing required parameter: 'session.model'.", "session.model")
    expires = call.data.get("expires_after")
    seconds = expires.get("seconds", 600) if isinstance(expires, dict) else 600
    expires_at = int(time.time()) + int(seconds)
    return _ok(
        {
            "value": hex_id("ek_"),
            "expires_at": expires_at,
            "session": {"type": "realtime", "object": "realtime.session", **session},
        }
    )


def add_routes(sim: Simulator, router: web.UrlDispatcher) -> None:
    """Add this wire's routes to the simulator's router."""

    async def moderations_route(request: web.Request) -> web.StreamResponse:
        return await sim.serve(request, "openai", moderations)

    async def images_route(request: web.Request) -> web.StreamResponse:
        return await sim.serve(request, "openai", images)

    async def speech_route(request: web.Request) -> web.StreamResponse:
        return await sim.serve(request, "openai", speech)

    async def transcriptions_route(request: web.Request) -> web.StreamResponse:
        def answer(call: Call) -> Reply:
            try:
                form, upload, _dropped = parse_form(call.body, call.headers.get("content-type"))
            except FormError as exc:
                return _bad(str(exc))
            return transcription(form, None if upload is None else upload.data)

        return await sim.serve(request, "openai", answer, parse_json=False)

    async def realtime_route(request: web.Request) -> web.StreamResponse:
        return await sim.serve(request, "openai", realtime_client_secret)

    router.add_post("/v1/realtime/client_secrets", realtime_route)
    router.add_post("/v1/audio/speech", speech_route)
    router.add_post("/v1/audio/transcriptions", transcriptions_route)
    router.add_post("/v1/moderations", moderations_route)
    router.add_post("/v1/images/generations", images_route)
