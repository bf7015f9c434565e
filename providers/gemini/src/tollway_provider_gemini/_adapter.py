"""The Gemini API (generativelanguage.googleapis.com): the core's ``generateContent`` wire
(:mod:`tollway.wire.gemini`) with the API's URLs and key auth."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from tollway.wire.gemini import GeminiWireProvider, translate_request

__all__ = ["DEFAULT_API_VERSION", "GeminiProvider", "translate_request"]

#: The Gemini API version of the URLs (``config.api_version``).
DEFAULT_API_VERSION = "v1beta"


class GeminiProvider(GeminiWireProvider):
    """generativelanguage.googleapis.com (the Gemini API, key auth).

    Serves ``/v1/chat/completions`` and ``/v1/messages``, both by translation to
    ``generateContent`` / ``streamGenerateContent?alt=sse`` (see ``docs/providers/gemini.md``).
    """

    type: ClassVar[str] = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    default_models: ClassVar[tuple[str, ...]] = ("gemini-*",)
    listed_models: ClassVar[tuple[str, ...]] = (
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash-lite",
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        if not self.api_key:
            problems.append(
                "api_key: a gemini provider needs the Gemini API key (sent as x-goog-api-key); "
                "create one in Google AI Studio"
            )
        version = self.config.config.get("api_version")
        if version is not None and (not isinstance(version, str) or not version.isidentifier()):
            problems.append(
                f"config.api_version: {version!r} must be an API version such as v1beta or v1"
            )
        return problems

    def gemini_url(self, model: str, stream: bool) -> str:
        version = self.config.config.get("api_version") or DEFAULT_API_VERSION
        model = model.removeprefix("models/")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self.base_url}/{version}/models/{quote(model, safe='')}:{method}"

    async def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key}
