"""Gateway-authored errors and the SPEC §2 error envelope.

Exception tree::

    GatewayError                      (an error Tollway itself answers with)
    ├── InvalidAPIKey                 401 invalid_api_key
    ├── BudgetExceeded                402 budget_exceeded
    ├── ModelNotAllowed               403 model_not_allowed
    ├── ToolNotAllowed                403 tool_not_allowed
    ├── GuardrailBlocked              403 guardrail_blocked
    ├── PayloadTooLarge               413 payload_too_large
    ├── BadRequest                    400 bad_request
    ├── RequestHeadersTooLarge        431 bad_request (too many or too large request headers)
    ├── RateLimitExceeded             429 rate_limit_exceeded
    ├── ProviderError                 502 provider_error
    ├── UpstreamTimeout               504 upstream_timeout
    ├── ServiceUnavailable            503 service_unavailable
    └── InternalError                 500 internal_error

    UpstreamError                     (raised by providers; the dispatcher decides what follows)
    ├── UpstreamConnectError          connection refused / reset before a response
    ├── UpstreamTimeoutError          no answer in time
    └── UpstreamHTTPError             the provider answered with an error status (passed through)

Every message says what to fix. Refusals a retry cannot fix carry ``x-should-retry: false``;
429 and 503 carry ``Retry-After`` in whole seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

__all__ = [
    "BadRequest",
    "BudgetExceeded",
    "GatewayError",
    "GuardrailBlocked",
    "InternalError",
    "InvalidAPIKey",
    "ModelNotAllowed",
    "PayloadTooLarge",
    "ProviderError",
    "RateLimitExceeded",
    "RequestHeadersTooLarge",
    "ServiceUnavailable",
    "ToolNotAllowed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamTimeout",
    "UpstreamTimeoutError",
]

_NO_RETRY_STATUSES = frozenset({400, 401, 402, 403, 413, 431})
# The openai SDK ignores Retry-After over 120 s and the anthropic SDK sleeps for any value:
# past this, tell clients not to retry rather than let them sleep for hours (SPEC §2).
_MAX_SLEEPABLE_RETRY_AFTER = 60


class GatewayError(Exception):
    """An error answered by the gateway itself, rendered as the SPEC §2 envelope."""

    type: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.param = param
        self.extra_headers: dict[str, str] = dict(headers or {})

    def envelope(self, *, anthropic: bool = False) -> bytes:
        """The JSON body: OpenAI-compatible, plus ``"type":"error"`` for Anthropic clients."""
        error: dict[str, Any] = {
            "type": self.type,
            "code": self.code or self.type,
            "message": self.message,
            "param": self.param,
        }
        if anthropic:
            return orjson.dumps({"type": "error", "error": error})
        return orjson.dumps({"error": error})

    def headers(self) -> dict[str, str]:
        """Headers that go with this error (retry hints and feature headers).

        A wait over 60 s (an ``rpd`` or budget window, a broken key config) is sent as
        ``X-LangWatch-Retry-After`` with ``x-should-retry: false`` and **no** ``Retry-After``:
        both official SDKs honour ``x-should-retry``, but clients that don't (Codex 0.169)
        would otherwise sleep for hours on ``Retry-After`` before showing the error.
        """
        out: dict[str, str] = {}
        if self.status in _NO_RETRY_STATUSES:
            out["x-should-retry"] = "false"
        long_wait = False
        if self.retry_after is not None:
            seconds = max(1, math.ceil(self.retry_after))
            if seconds > _MAX_SLEEPABLE_RETRY_AFTER:
                long_wait = True
                out["x-should-retry"] = "false"
                out["X-LangWatch-Retry-After"] = str(seconds)
            else:
                out["Retry-After"] = str(seconds)
        for name, value in self.extra_headers.items():
            if long_wait and name.lower() in ("retry-after", "retry-after-ms"):
                continue
            out[name] = value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class InvalidAPIKey(GatewayError):
    type = "invalid_api_key"
    status = 401


class BudgetExceeded(GatewayError):
    type = "budget_exceeded"
    status = 402


class ModelNotAllowed(GatewayError):
    type = "model_not_allowed"
    status = 403


class ToolNotAllowed(GatewayError):
    type = "tool_not_allowed"
    status = 403


class GuardrailBlocked(GatewayError):
    type = "guardrail_blocked"
    status = 403


class PayloadTooLarge(GatewayError):
    type = "payload_too_large"
    status = 413


class BadRequest(GatewayError):
    type = "bad_request"
    status = 400


class RequestHeadersTooLarge(GatewayError):
    """Too many request headers, or too many bytes of them (HTTP 431, type ``bad_request``)."""

    type = "bad_request"
    status = 431


class RateLimitExceeded(GatewayError):
    type = "rate_limit_exceeded"
    status = 429


class ProviderError(GatewayError):
    type = "provider_error"
    status = 502


class UpstreamTimeout(GatewayError):
    type = "upstream_timeout"
    status = 504


class ServiceUnavailable(GatewayError):
    type = "service_unavailable"
    status = 503


class InternalError(GatewayError):
    type = "internal_error"
    status = 500


class UpstreamError(Exception):
    """A provider attempt failed; ``retryable`` says whether fallback may try the next one."""

    retryable: bool = True
    reason: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UpstreamConnectError(UpstreamError):
    reason = "connect_error"


class UpstreamTimeoutError(UpstreamError):
    reason = "timeout"


class UpstreamHTTPError(UpstreamError):
    """The provider answered ``status`` >= 400; its body and headers pass through to the client."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"upstream answered HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body
        # SPEC §5: fall back on 5xx, 429 and 404; never on other 4xx.
        self.retryable = status >= 500 or status in (404, 429)
        self.reason = f"http_{status}"
