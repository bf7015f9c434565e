"""Vertex AI: Gemini models (``publishers/google``) and Claude models (``publishers/anthropic``)
with a service account's OAuth2 access tokens.

Both wires are the core's: the adapter is :class:`~tollway.wire.gemini.GeminiWireProvider` with
Vertex's URLs and tokens, and sends Claude models through :mod:`tollway.wire.anthropic`
(:func:`~tollway.wire.anthropic.chat_to_messages_body`,
:func:`~tollway.wire.anthropic.messages_answer`) with the model in the URL.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

import orjson

from tollway import RequestContext, RouteTarget, UpstreamError
from tollway.formats import forget_dropped
from tollway.outbound import OutboundPolicy
from tollway.provider import (
    ProviderResult,
    UpstreamHTTP,
    forwardable_request_headers,
)
from tollway.wire.anthropic import (
    chat_to_messages_body,
    claude_sampling,
    estimated_count_tokens,
    messages_answer,
)
from tollway.wire.gemini import GeminiWireProvider

if TYPE_CHECKING:
    from tollway_provider_vertex._tokens import TokenSource

__all__ = ["ANTHROPIC_VERSION", "SCOPE", "ServiceAccountRefused", "VertexProvider"]

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: The ``anthropic_version`` Claude on Vertex takes in the body (instead of the header).
ANTHROPIC_VERSION = "vertex-2023-10-16"
DEFAULT_LOCATION = "us-central1"
_LOCATION = re.compile(r"^[a-z][a-z0-9-]*$")
_REQUIRED_FIELDS = ("client_email", "private_key", "token_uri")


class ServiceAccountRefused(UpstreamError):
    """Google's token endpoint refused the service account (deleted, disabled or wrong key).

    Fallback may try another provider; alone, the client gets 502 ``provider_error`` with
    this message.
    """

    reason = "service_account_refused"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_claude(model: str) -> bool:
    """Claude models are served by the ``anthropic`` publisher, everything else by ``google``."""
    return model.startswith("claude-")


class VertexProvider(GeminiWireProvider):
    """Vertex AI (``aiplatform.googleapis.com``) with a service account.

    ``claude-*`` models go to the Anthropic publisher (``rawPredict`` / ``streamRawPredict``,
    the Messages wire), every other model to the Google publisher (``generateContent``, the
    Gemini wire). Both client formats are served; a messages client on a Claude model is
    relayed as it is apart from the body rewrite (no ``model``, ``anthropic_version`` added).
    """

    type: ClassVar[str] = "vertex"
    default_models = ("gemini-*", "claude-*")
    listed_models = (
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "claude-sonnet-4-5@20250929",
        "claude-haiku-4-5@20251001",
    )

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        settings = self.config.config
        self.project = str(settings.get("project") or "")
        self.location = str(settings.get("location") or DEFAULT_LOCATION)
        if not config.base_url:
            self.base_url = (
                "https://aiplatform.googleapis.com"
                if self.location == "global"
                else f"https://{self.location}-aiplatform.googleapis.com"
            )
        self.anthropic_version = str(settings.get("anthropic_version") or ANTHROPIC_VERSION)
        self._tokens: TokenSource | None = None
        #: The gateway's SSRF guard, from the first attempt's :class:`UpstreamHTTP`.
        self._outbound: OutboundPolicy | None = None

    # --- configuration ---------------------------------------------------------------------

    def _service_account_info(self) -> tuple[str, dict[str, Any]]:
        """Where the service account JSON came from (``api_key`` text, else
        ``config.credentials_file``) and its fields.

        Raises ``ValueError`` with a one-line, secret-free message."""
        path = self.config.config.get("credentials_file")
        if self.api_key:
            where, text = "api_key", self.api_key
        elif path:
            where = "config.credentials_file"
            try:
                text = Path(str(path)).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(
                    f"{where}: cannot read {path} ({exc.strerror or type(exc).__name__})"
                ) from None
        else:
            raise ValueError(
                "api_key: a vertex provider needs a service account key: put the JSON key's "
                "text in api_key or its path in config.credentials_file"
            )
        try:
            info = orjson.loads(text)
        except orjson.JSONDecodeError:
            info = None
        if not isinstance(info, dict):
            raise ValueError(
                f"{where}: not a service account JSON key (create one under IAM, Service "
                "accounts, Keys, Add key, JSON)"
            )
        if info.get("type") != "service_account":
            raise ValueError(f"{where}: the JSON key's type must be service_account")
        missing = [k for k in _REQUIRED_FIELDS if not info.get(k)]
        if missing:
            raise ValueError(f"{where}: the service account key lacks {', '.join(missing)}")
        token_uri = urlsplit(str(info["token_uri"]))
        if token_uri.scheme != "https" and not (
            token_uri.scheme == "http" and _is_loopback(token_uri.hostname or "")
        ):
            raise ValueError(
                f"{where}: token_uri must be an https URL (it receives the signed assertion)"
            )
        return where, info

    def outbound_urls(self) -> list[tuple[str, str]]:
        """The service account's ``token_uri`` (it receives the signed assertion)."""
        try:
            where, info = self._service_account_info()
        except ValueError:
            return []  # validate() reports it
        return [(f"{where}.token_uri", str(info["token_uri"]))]

    def _token_source(self) -> TokenSource:
        where, info = self._service_account_info()
        # google-auth and requests (several MiB) are imported once a vertex provider is
        # configured, not when the plugin loads.
        from tollway_provider_vertex._tokens import TokenSource

        try:
            return TokenSource(info, policy=self._outbound)
        except Exception as exc:  # google-auth / cryptography could not load the key
            # Name the error type only: the message could quote key material.
            raise ValueError(
                f"{where}: the service account's private_key cannot be loaded "
                f"({type(exc).__name__}); download a new JSON key"
            ) from None

    def validate(self) -> list[str]:
        problems = self.model_ids.problems()
        if not self.project:
            problems.append(
                "config.project: a vertex provider needs the Google Cloud project id "
                '(e.g. {"project": "my-project", "location": "us-central1"})'
            )
        if not _LOCATION.match(self.location):
            problems.append(
                f"config.location: {self.location!r} is not a Vertex AI location such as "
                "us-central1, europe-west4 or global"
            )
        try:
            self._token_source()
        except ValueError as exc:
            problems.append(str(exc))
        return problems

    def tokens(self) -> TokenSource:
        """The (lazily built) token source of this provider's service account."""
        if self._tokens is None:
            try:
                self._tokens = self._token_source()
            except ValueError as exc:
                raise ServiceAccountRefused(
                    f"the vertex provider's credentials cannot be used: {exc}"
                ) from None
        return self._tokens

    # --- URLs and auth ---------------------------------------------------------------------

    def _model_url(self, publisher: str, model: str, method: str) -> str:
        return (
            f"{self.base_url}/v1/projects/{quote(self.project, safe='')}/locations/"
            f"{quote(self.location, safe='')}/publishers/{publisher}/models/"
            f"{quote(model, safe='@')}:{method}"
        )

    def gemini_url(self, model: str, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return self._model_url("google", model, method)

    async def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {await self.tokens().token()}"}

    # --- the attempt -----------------------------------------------------------------------

    async def send(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        if ctx.endpoint == "count_tokens":
            return estimated_count_tokens(ctx.body)
        if self._tokens is None:
            policy = getattr(http, "policy", None)
            # The token endpoint was checked as a URL when this adapter was built; a host name
            # is checked when connecting, unless the operator allowed private networks here.
            self._outbound = None if self.config.allow_private_network else policy
        tokens = self.tokens()
        # The token endpoint goes through the same proxy as this provider's calls.
        tokens.proxy = http.proxy_for(tokens.token_uri).url
        if ctx.endpoint != "gemini" and is_claude(self.model_ids.upstream(target.model)):
            return await self._send_claude(ctx, target, http)
        return await self.send_gemini(ctx, target, http)

    async def _send_claude(
        self, ctx: RequestContext, target: RouteTarget, http: UpstreamHTTP
    ) -> ProviderResult:
        """Claude on Vertex: the Messages wire with the model in the URL."""
        headers = {
            k: v
            for k, v in forwardable_request_headers(ctx.headers.items()).items()
            if not k.startswith("openai-") and k != "anthropic-version"
        }
        headers["content-type"] = "application/json"
        headers.update(await self.auth_headers())
        chat = ctx.endpoint != "messages"
        upstream_model = self.model_ids.upstream(target.model)
        if chat:
            body = chat_to_messages_body(
                ctx,
                model=target.model,
                sampling=claude_sampling(upstream_model),
                config=self.config.config,
            )
        else:
            forget_dropped(ctx)
            body = dict(ctx.body)
        body.pop("model", None)
        body["anthropic_version"] = self.anthropic_version
        method = "streamRawPredict" if ctx.stream else "rawPredict"
        url = self._model_url("anthropic", upstream_model, method)
        return await messages_answer(
            ctx,
            http,
            url,
            headers,
            orjson.dumps(body),
            model=target.model,
            upstream="Claude on Vertex",
            set_model=True,
        )
