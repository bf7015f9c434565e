"""Claude's Messages answers turned into a gateway result.

Moved to the core as :mod:`tollway.wire.anthropic` (adapters reaching the Messages wire
elsewhere import it from there); the names stay importable here.
"""

from __future__ import annotations

from tollway.wire.anthropic import (
    messages_result,
    messages_to_chat_result,
    messages_usage_inspector,
)

__all__ = ["messages_result", "messages_to_chat_result", "messages_usage_inspector"]
