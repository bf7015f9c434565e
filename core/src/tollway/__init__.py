"""Tollway: a self-hosted AI gateway.

Plugin authors import everything they need from here: the ``hookimpl`` marker, the request
context and its stash, the value types, the error tree and the provider base class.
"""

from __future__ import annotations

__version__ = "0.1.0"

from tollway._context import RequestContext, Stash, StashKey
from tollway._errors import (
    BadRequest,
    BudgetExceeded,
    GatewayError,
    GuardrailBlocked,
    InternalError,
    InvalidAPIKey,
    ModelNotAllowed,
    PayloadTooLarge,
    ProviderError,
    RateLimitExceeded,
    RequestHeadersTooLarge,
    ServiceUnavailable,
    ToolNotAllowed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamTimeoutError,
)
from tollway._input import quote_input
from tollway._markers import hookimpl, hookspec
from tollway._qualified import QualifiedModel, parse_qualified_model
from tollway._types import (
    Attempt,
    ChainEntry,
    Credential,
    Principal,
    RouteTarget,
    StreamFilter,
    Usage,
    Verdict,
)

__all__ = [
    "Attempt",
    "BadRequest",
    "BudgetExceeded",
    "ChainEntry",
    "Credential",
    "GatewayError",
    "GuardrailBlocked",
    "InternalError",
    "InvalidAPIKey",
    "ModelNotAllowed",
    "PayloadTooLarge",
    "Principal",
    "ProviderError",
    "QualifiedModel",
    "RateLimitExceeded",
    "RequestContext",
    "RequestHeadersTooLarge",
    "RouteTarget",
    "ServiceUnavailable",
    "Stash",
    "StashKey",
    "StreamFilter",
    "ToolNotAllowed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamTimeout",
    "UpstreamTimeoutError",
    "Usage",
    "Verdict",
    "__version__",
    "hookimpl",
    "hookspec",
    "parse_qualified_model",
    "quote_input",
]
