"""OpenAI and OpenAI-compatible upstreams: the core's OpenAI wire (:mod:`tollway.wire.openai`)
with OpenAI's defaults."""

from __future__ import annotations

from typing import ClassVar

from tollway.wire.openai import OpenAIWireProvider, is_reasoning_model

__all__ = ["CustomOpenAIProvider", "OpenAIProvider", "is_reasoning_model"]


class OpenAIProvider(OpenAIWireProvider):
    """api.openai.com (or an OpenAI base URL): chat, responses, embeddings natively, and
    ``/v1/messages`` by translation to chat completions (see ``docs/translation.md``)."""

    type: ClassVar[str] = "openai"
    default_base_url = "https://api.openai.com/v1"
    default_models: ClassVar[tuple[str, ...]] = (
        "gpt-*",
        "o1*",
        "o3*",
        "o4*",
        "chatgpt-*",
        "codex-*",
        "text-embedding-*",
        "computer-use-*",
        "omni-*",
        "text-moderation-*",
        "dall-e-*",
        "tts-*",
        "whisper-*",
    )
    listed_models: ClassVar[tuple[str, ...]] = (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-5",
        "o4-mini",
        "text-embedding-3-small",
    )


class CustomOpenAIProvider(OpenAIProvider):
    """Any OpenAI-compatible base URL (vLLM, Ollama, LM Studio, …): serves every model.

    Translated Anthropic requests send ``max_tokens`` (what compatible servers know best) unless
    ``config.max_tokens_field`` says otherwise, and keep every sampling parameter.
    """

    type: ClassVar[str] = "custom"
    default_models = ("*",)
    listed_models = ()
    default_max_tokens_field: ClassVar[str] = "max_tokens"
    openai_model_names: ClassVar[bool] = False

    def validate(self) -> list[str]:
        problems = super().validate()
        if not self.config.base_url:
            problems.insert(0, "base_url: a custom (OpenAI-compatible) provider needs base_url")
        return problems
