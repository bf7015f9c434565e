"""OpenAI chat completions ⇄ Gemini ``generateContent``.

Moved to the core as :mod:`tollway.wire.gemini_translate` (shared with the Vertex AI adapter);
the names stay importable here.
"""

from __future__ import annotations

from tollway.formats import DroppedParams
from tollway.wire.gemini_translate import (
    MAX_STOP_SEQUENCES,
    ChainedStream,
    GeminiToChatStream,
    chat_request_to_gemini,
    finish_reason_from_gemini,
    gemini_response_to_chat,
    gemini_usage,
    json_schema_to_gemini,
    new_call_id,
)

__all__ = [
    "MAX_STOP_SEQUENCES",
    "ChainedStream",
    "GeminiToChatStream",
    "chat_request_to_gemini",
    "finish_reason_from_gemini",
    "gemini_response_to_chat",
    "gemini_usage",
    "json_schema_to_gemini",
    "new_call_id",
]

#: The old private name of :class:`~tollway.formats.DroppedParams` (kept for callers).
_Dropped = DroppedParams
