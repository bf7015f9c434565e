"""Shared wire clients: the upstream protocols several provider adapters speak.

A provider plugin never imports another provider plugin, so what two adapters share lives here,
in the core, as a public interface they compose:

- :mod:`tollway.wire.openai`: the OpenAI wire (chat, responses, embeddings; Anthropic clients by
  translation) as :class:`~tollway.wire.openai.OpenAIWireProvider`, a
  :class:`~tollway.provider.Provider` base class with URL, auth and body hooks. OpenAI,
  OpenAI-compatible servers and Azure OpenAI are this class with their defaults and hooks.
- :mod:`tollway.wire.anthropic`: the Anthropic Messages wire (Messages relayed, chat clients by
  translation) as :class:`~tollway.wire.anthropic.AnthropicWireProvider`, plus the functions an
  adapter reaching Claude elsewhere composes (Claude on Vertex AI): :func:`~tollway.wire.
  anthropic.claude_sampling`, :func:`~tollway.wire.anthropic.chat_to_messages_body`,
  :func:`~tollway.wire.anthropic.messages_answer`.
- :mod:`tollway.wire.gemini`: the ``generateContent`` wire (chat and Messages clients, both by
  translation) as :class:`~tollway.wire.gemini.GeminiWireProvider` with URL and auth hooks (the
  Gemini API with an API key, Vertex AI with a service account), built on the pure translators
  of :mod:`tollway.wire.gemini_translate`.

The request translators between the OpenAI and Anthropic formats are :mod:`tollway.formats`.
"""

from __future__ import annotations

__all__: list[str] = []
