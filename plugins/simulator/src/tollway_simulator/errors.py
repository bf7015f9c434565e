"""Native error bodies of the providers' APIs, and provider response headers.

OpenAI and Anthropic are built in; every other wire registers its own shapes with
:func:`register_flavor` (see ``gemini_wire`` / ``bedrock_wire``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tollway_simulator.common import JsonReply, b62_id, dumps, hex_id

#: ``"openai"``, ``"anthropic"`` or a name given to :func:`register_flavor`.
Flavor = str


@dataclass(frozen=True, slots=True)
class ErrorFlavor:
    """How one provider shapes its errors.

    ``body(status, message, type_)`` is the native error body for a validation error the
    simulator authors (``type_`` is the OpenAI-style type it was asked for; map or ignore it);
    ``fault_body(status)`` the body a real outage with ``status`` looks like; ``headers()`` fresh
    per-response headers (request ids). ``error_headers(status)`` adds headers only errors carry
    (Bedrock's ``x-amzn-ErrorType``).
    """

    body: Callable[[int, str, str], bytes]
    fault_body: Callable[[int], bytes]
    headers: Callable[[], dict[str, str]]
    error_headers: Callable[[int], dict[str, str]] = lambda _status: {}


_FLAVORS: dict[str, ErrorFlavor] = {}


def register_flavor(name: str, flavor: ErrorFlavor) -> None:
    """Make ``name`` usable as a ``flavor`` in :meth:`Simulator.serve` and :func:`error_reply`."""
    _FLAVORS[name] = flavor


# status → (type, code, message), as the real OpenAI API answers.
_OPENAI: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict (simulated)."),
    413: ("invalid_request_error", None, "Request too large (simulated)."),
    422: ("invalid_request_error", None, "Unprocessable entity (simulated)."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (simulated). Please try again in 1s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
}

# status → (type, message), as the real Anthropic API answers.
_ANTHROPIC: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (simulated)."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    408: ("timeout_error", "Request timed out."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit (simulated)."),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Gateway timeout"),
    529: ("overloaded_error", "Overloaded"),
}


def provider_headers(flavor: Flavor) -> dict[str, str]:
    """Realistic per-response headers (a fresh request id each time)."""
    extra = _FLAVORS.get(flavor)
    if extra is not None:
        return extra.headers()
    if flavor == "anthropic":
        return {"request-id": b62_id("req_011C", 20)}
    return {
        "x-request-id": hex_id("req_", 16),
        "openai-version": "2020-10-01",
        "openai-processing-ms": "7",
    }


def openai_error_body(
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    return dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def anthropic_error_body(message: str, type_: str = "invalid_request_error") -> bytes:
    return dumps({"type": "error", "error": {"type": type_, "message": message}})


def error_reply(
    flavor: Flavor,
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> JsonReply:
    """A validation error authored by the simulator, in the provider's native shape."""
    extra = _FLAVORS.get(flavor)
    if extra is not None:
        headers = extra.headers()
        headers.update(extra.error_headers(status))
        return JsonReply(status, extra.body(status, message, type_), headers)
    if flavor == "anthropic":
        body = anthropic_error_body(message, type_)
    else:
        body = openai_error_body(message, type_, code, param)
    return JsonReply(status, body, provider_headers(flavor))


def status_fault_reply(flavor: Flavor, status: int, retry_after: int = 1) -> JsonReply:
    """The error a provider returns with ``status`` (the ``--fault 500`` family); a 429 says
    ``retry-after: <retry_after>``."""
    extra = _FLAVORS.get(flavor)
    if extra is not None:
        body = extra.fault_body(status)
        headers = extra.headers()
        headers.update(extra.error_headers(status))
    elif flavor == "anthropic":
        type_, message = _ANTHROPIC.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
        )
        body = anthropic_error_body(message, type_)
    else:
        type_, code, message = _OPENAI.get(
            status,
            ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}"),
        )
        body = openai_error_body(message, type_, code)
    if extra is None:
        headers = provider_headers(flavor)
    if status == 429:
        headers["retry-after"] = str(retry_after)
    headers["x-simulator-fault"] = str(status)
    return JsonReply(status, body, headers)


HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n"
    b"<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)


def html_fault_reply() -> JsonReply:
    return JsonReply(502, HTML_502, {"x-simulator-fault": "html"}, "text/html")
