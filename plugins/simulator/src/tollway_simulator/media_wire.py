"""The OpenAI wires beyond chat, responses and embeddings: moderations and image generation.

Routes::

    POST /v1/moderations           {"input", "model"?} → a moderation per input (never flagged,
                                   unless the text contains "flag-me")
    POST /v1/images/generations    {"prompt", "model", "n"?} → ``n`` tiny PNGs (b64_json); the
                                   ``gpt-image-*`` models report token usage as OpenAI's do

Answers are deterministic; errors have OpenAI's shape.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tollway_simulator.common import Call, JsonReply, Reply, dumps, hex_id, input_tokens_of
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


def add_routes(sim: Simulator, router: web.UrlDispatcher) -> None:
    """Add this wire's routes to the simulator's router."""

    async def moderations_route(request: web.Request) -> web.StreamResponse:
        return await sim.serve(request, "openai", moderations)

    async def images_route(request: web.Request) -> web.StreamResponse:
        return await sim.serve(request, "openai", images)

    router.add_post("/v1/moderations", moderations_route)
    router.add_post("/v1/images/generations", images_route)
