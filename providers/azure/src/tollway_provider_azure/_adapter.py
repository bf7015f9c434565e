"""Azure OpenAI: the OpenAI wire at Azure's URLs, with Azure's credentials.

Everything about the wire (byte-for-byte relay, ``include_usage`` injection, usage accounting,
``/v1/messages`` by translation) is the core's OpenAI wire (:mod:`tollway.wire.openai`); this
module only decides where a request goes (deployment, ``api-version``) and how it authenticates
(``api-key``), through the wire's hooks.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from tollway import RequestContext, RouteTarget
from tollway.config import ProviderConfig
from tollway.wire.openai import OpenAIWireProvider

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIProvider", "azure_url"]

#: The newest GA data-plane ``api-version`` of the deployment routes.
DEFAULT_API_VERSION = "2024-10-21"
_DEPLOYMENT_SUFFIX = {"chat": "/chat/completions", "embeddings": "/embeddings"}
#: ``responses_api_version`` values that select the v1 route (``/openai/v1/responses``).
_V1_VERSIONS = ("preview", "latest")
_AUTH_SCHEMES = ("api-key", "bearer")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_MAX_DEPLOYMENT_NAME = 64
_KNOWN_KEYS = (
    "api_version",
    "auth",
    "deployment_fallback",
    "deployments",
    "max_tokens_field",
    "responses_api_version",
    "sampling_params",
)


def _is_name(value: Any, limit: int = _MAX_DEPLOYMENT_NAME) -> bool:
    """A deployment name or api-version: letters, digits, ``-``, ``_``, ``.`` (URL-safe)."""
    return (
        isinstance(value, str) and 0 < len(value) <= limit and all(c in _NAME_CHARS for c in value)
    )


def azure_url(
    base_url: str,
    endpoint: str,
    deployment: str,
    *,
    api_version: str = DEFAULT_API_VERSION,
    responses_api_version: str | None = None,
    query_string: bytes = b"",
) -> str:
    """The Azure OpenAI URL for a client ``endpoint`` (``chat``, ``embeddings``, ``responses``).

    Chat completions and embeddings go to the deployment's route with ``api-version``. The
    Responses API has no deployment in its path (the body's ``model`` names the deployment): by
    default the v1 GA route ``/openai/v1/responses`` without ``api-version``;
    ``responses_api_version`` ``"preview"``/``"latest"`` adds it to the v1 route, and a dated
    version (``"2025-04-01-preview"``) selects the older ``/openai/responses`` route. The
    client's own query parameters travel along, except ``api-version`` (the operator's choice).
    """
    extra = [
        (k, v)
        for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if k.lower() != "api-version"
    ]
    if endpoint == "responses":
        version = responses_api_version or None
        if version is None or version in _V1_VERSIONS:
            path = "/openai/v1/responses"
        else:
            path = "/openai/responses"
    else:
        path = f"/openai/deployments/{quote(deployment, safe='')}{_DEPLOYMENT_SUFFIX[endpoint]}"
        version = api_version
    params = ([("api-version", version)] if version else []) + extra
    return f"{base_url}{path}?{urlencode(params)}" if params else base_url + path


class AzureOpenAIProvider(OpenAIWireProvider):
    """An Azure OpenAI resource (``https://<resource>.openai.azure.com``).

    ``config.deployments`` maps the model ids clients ask for to deployment names; those models
    are what the provider serves and lists. With ``config.deployment_fallback = true`` any
    other model (limited by ``models`` when set) is sent to a deployment of the same name.
    """

    type: ClassVar[str] = "azure"
    #: The deployment URLs this adapter builds (the newer OpenAI wires are not mapped yet).
    endpoints = frozenset({"chat", "responses", "embeddings", "messages", "count_tokens"})
    native_endpoints: ClassVar[frozenset[str] | None] = frozenset(
        {"chat", "responses", "embeddings"}
    )
    default_base_url = ""
    default_models: ClassVar[tuple[str, ...]] = ()
    listed_models: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        settings = config.config
        raw = settings.get("deployments")
        self.deployments: dict[str, str] = (
            {str(k): v for k, v in raw.items() if isinstance(v, str) and v}
            if isinstance(raw, dict)
            else {}
        )
        self.deployment_fallback = settings.get("deployment_fallback") is True
        version = settings.get("api_version")
        self.api_version: str = (
            version if isinstance(version, str) and version else DEFAULT_API_VERSION
        )
        responses_version = settings.get("responses_api_version")
        self.responses_api_version: str | None = (
            responses_version if isinstance(responses_version, str) and responses_version else None
        )
        self.auth: str = "bearer" if settings.get("auth") == "bearer" else "api-key"
        if config.models is None:
            # What the key reaches is the deployment map (or everything, with the fallback).
            self._exact = frozenset(self.deployments)
            self._prefixes = ("",) if self.deployment_fallback else ()

    # --- configuration ------------------------------------------------------------------

    def validate(self) -> list[str]:
        problems: list[str] = []
        cfg = self.config
        if not cfg.base_url:
            problems.append(
                "base_url: an azure provider needs its resource endpoint, e.g. "
                'base_url = "https://<resource>.openai.azure.com"'
            )
        else:
            path = urlsplit(cfg.base_url).path.rstrip("/")
            if path.endswith(("/openai", "/openai/v1")) or "/openai/deployments" in path:
                problems.append(
                    f"base_url: {cfg.base_url!r} includes the API path {path!r}; give only the "
                    'resource endpoint, e.g. "https://<resource>.openai.azure.com" (the adapter '
                    "adds /openai/deployments/<deployment>/…)"
                )
        if not cfg.api_key:
            problems.append(
                "api_key: an azure provider needs the resource's key (Azure portal → the "
                "resource → Keys and Endpoint), or a Microsoft Entra token with "
                'config.auth = "bearer"'
            )
        settings = cfg.config
        unknown = sorted(k for k in settings if k not in _KNOWN_KEYS)
        if unknown:
            problems.append(
                f"config: unknown key(s) {', '.join(unknown)} for an azure provider; known: "
                f"{', '.join(_KNOWN_KEYS)}"
            )
        problems.extend(self._deployment_problems(settings))
        for key in ("api_version", "responses_api_version"):
            value = settings.get(key)
            if value is not None and not _is_name(value, 40):
                problems.append(
                    f"config.{key}: {value!r} is not an api-version such as "
                    f'"{DEFAULT_API_VERSION}" or "2025-04-01-preview"'
                )
        auth = settings.get("auth")
        if auth is not None and auth not in _AUTH_SCHEMES:
            problems.append(
                f"config.auth: {auth!r} is not one of api-key, bearer (send api_key as the "
                '"api-key" header, or as "Authorization: Bearer" for a Microsoft Entra token)'
            )
        problems.extend(super().validate())
        return problems

    def _deployment_problems(self, settings: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        raw = settings.get("deployments")
        fallback = settings.get("deployment_fallback")
        if fallback is not None and not isinstance(fallback, bool):
            problems.append(
                f"config.deployment_fallback: {fallback!r} must be true or false (whether a "
                "model missing from config.deployments goes to a deployment of the same name)"
            )
        if raw is not None and not isinstance(raw, dict):
            problems.append(
                "config.deployments: must be a table mapping model ids to deployment names, "
                'e.g. deployments = { "gpt-4o" = "my-gpt4o-deployment" }'
            )
            return problems
        for model, deployment in (raw or {}).items():
            if not model or model.endswith("*"):
                problems.append(
                    f"config.deployments: {model!r} is not a model id (globs are not allowed: "
                    "each model maps to one deployment)"
                )
            if not _is_name(deployment):
                problems.append(
                    f"config.deployments.{model}: {deployment!r} is not an Azure deployment name "
                    f"(1-{_MAX_DEPLOYMENT_NAME} letters, digits, '-', '_' or '.')"
                )
        if not raw and fallback is not True:
            problems.append(
                "config.deployments: map at least one model id to its deployment name, e.g. "
                'deployments = { "gpt-4o" = "my-gpt4o-deployment" }, or set '
                "config.deployment_fallback = true to send every model to a deployment of the "
                "same name"
            )
        elif fallback is not True and self.config.models is not None:
            unmapped = [
                m for m in self.config.models if not m.endswith("*") and m not in (raw or {})
            ]
            if unmapped:
                problems.append(
                    f"models: {', '.join(unmapped)} not in config.deployments, so never served; "
                    "map them to deployments or set config.deployment_fallback = true"
                )
        return problems

    # --- models -------------------------------------------------------------------------

    def deployment_for(self, model: str) -> str | None:
        """The deployment serving ``model``, or None when this provider does not serve it."""
        deployment = self.deployments.get(model)
        if deployment is not None:
            return deployment
        return model if self.deployment_fallback else None

    def serves(self, model: str) -> bool:
        return super().serves(model) and self.deployment_for(model) is not None

    def models(self) -> list[str]:
        if self.config.models is not None:
            return [
                m
                for m in self.config.models
                if not m.endswith("*") and self.deployment_for(m) is not None
            ]
        return list(self.deployments)

    # --- the OpenAI wire's hooks --------------------------------------------------------

    def _deployment(self, target: RouteTarget) -> str:
        # A routing policy may pin a model this provider does not list: Azure then answers
        # 404 DeploymentNotFound for a deployment of that name, and the chain goes on.
        return self.deployment_for(target.model) or target.model

    def auth_headers(self) -> dict[str, str]:
        if self.auth == "bearer":
            return {"authorization": f"Bearer {self.api_key}"}
        return {"api-key": self.api_key}

    def endpoint_url(self, endpoint: str, target: RouteTarget, query_string: bytes) -> str:
        return azure_url(
            self.base_url,
            endpoint,
            self._deployment(target),
            api_version=self.api_version,
            responses_api_version=self.responses_api_version,
            query_string=query_string,
        )

    def request_body(self, ctx: RequestContext, target: RouteTarget) -> bytes:
        if ctx.endpoint == "responses":
            # The Responses API picks the deployment from the body's model.
            return ctx.body_bytes(self._deployment(target))
        return super().request_body(ctx, target)
