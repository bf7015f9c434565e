"""The built-in ``webhook`` evaluator: ask an HTTP service for the verdict (SPEC §6).

Request: ``POST <url>`` with ``Content-Type: application/json`` and the body
``{"direction", "content", "vk_id", "request_id"}``; with a ``secret``, the header
``X-Tollway-Signature: hex(HMAC-SHA256(secret, body))`` over the exact body bytes.
Answer: a 2xx JSON object ``{"decision": "allow"|"block"|"modify", "reason": "…",
"modified_content": {…same shape as content…}}``. Anything else — another status, a body that
is not such an object, no answer within the timeout — is a failure of the evaluator, which the
guardrails plugin turns into fail-closed or fail-open as the key says.

The URL goes through the gateway's SSRF guard (:mod:`tollway.outbound`): outside
``ENVIRONMENT=local`` a loopback/private address (in any spelling) is refused when the key's
guardrails are compiled, before anything is sent, and a host name is refused at connect time
when it resolves only to such addresses. Redirects are never followed. A refusal is reported as
"refused by the SSRF guard", never with anything the address answered.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from tollway import Verdict
from tollway.egress import Egress
from tollway.guardrails import GuardrailRequest
from tollway.outbound import ALLOW_CIDRS_ENV, OutboundPolicy
from tollway.provider import PublicOnlyResolver

__all__ = [
    "MAX_ANSWER_BYTES",
    "SIGNATURE_HEADER",
    "WEBHOOK_KEYS",
    "WebhookError",
    "WebhookEvaluator",
    "sign",
    "validate_webhook_settings",
]

SIGNATURE_HEADER = "X-Tollway-Signature"
WEBHOOK_KEYS = ("evaluator", "url", "timeout_ms", "secret")
#: The longest answer read from a webhook (a modified response can be long, but not unbounded).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_DECISIONS = ("allow", "block", "modify")


class WebhookError(Exception):
    """The webhook did not give a usable answer."""


def sign(secret: str, body: bytes) -> str:
    """``hex(HMAC-SHA256(secret, body))`` — the ``X-Tollway-Signature`` value."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


#: The SSRF guard's check when none is given: URL shape and no user info, any address.
_SHAPE_ONLY = OutboundPolicy(guard=False)
_HINT = f"a webhook on your own network needs its network in {ALLOW_CIDRS_ENV}"


def validate_webhook_settings(
    settings: Mapping[str, Any], policy: OutboundPolicy | None = None
) -> list[str]:
    """Problems with a webhook evaluator object, each ``<key>: <what to fix>``. With ``policy``
    (the gateway's SSRF guard) the URL's address is checked too; without, only its shape and
    that it carries no user info."""
    out: list[str] = []
    for key in settings:
        if key not in WEBHOOK_KEYS:
            out.append(f"{key}: unknown key (known: {', '.join(WEBHOOK_KEYS)})")
    url = settings.get("url")
    if not isinstance(url, str) or not url:
        out.append(
            'url: the webhook evaluator needs "url", the http(s) address to POST each evaluation to'
        )
    else:
        problem = (policy or _SHAPE_ONLY).url_problem(url, hint=_HINT)
        if problem is not None:
            out.append(f"url: {problem}")
    secret = settings.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        out.append("secret: must be a non-empty string (the HMAC-SHA256 signing key) or absent")
    return out


class WebhookEvaluator:
    """POSTs each evaluation to the URL of the key's inline settings.

    One aiohttp session per gateway, opened by :meth:`start` (the guardrails plugin calls it in
    ``gateway_started``, after setting :attr:`policy` to the gateway's SSRF guard) and closed by
    :meth:`aclose`.
    """

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        #: The gateway's outbound proxy settings (set by the guardrails plugin at start).
        self.egress: Egress = Egress()
        #: The SSRF guard URLs are checked with (the gateway's; production rules by default).
        self.policy = policy or OutboundPolicy()

    def validate_settings(self, settings: Mapping[str, Any]) -> list[str]:
        return validate_webhook_settings(settings, self.policy)

    async def start(self) -> None:
        if self._session is None:
            policy = self.policy
            resolver = PublicOnlyResolver(policy) if policy.guard else None
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, resolver=resolver),
                skip_auto_headers=("User-Agent",),
                raise_for_status=False,
                # No cookie jar: one key's verdict call must not carry a cookie another's got.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        settings = request.settings
        url = settings.get("url")
        if not isinstance(url, str):
            raise WebhookError('the webhook evaluator has no "url" setting')
        refused = self.policy.url_problem(url, hint=_HINT)  # cached: a dict lookup
        if refused is not None:
            raise WebhookError(f"the webhook URL is refused: {refused}")
        body = orjson.dumps(
            {
                "direction": request.direction,
                "content": request.content,
                "vk_id": request.vk_id,
                "request_id": request.request_id,
            }
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tollway-guardrails",
            "X-Tollway-Request-Id": request.request_id,
        }
        secret = settings.get("secret")
        if isinstance(secret, str) and secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        if self._session is None:
            await self.start()
        assert self._session is not None
        host = urlsplit(url).netloc
        timeout = aiohttp.ClientTimeout(total=request.timeout_s)
        proxy = self.egress.choose(url)
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                proxy=proxy.url,
            ) as resp:
                if not 200 <= resp.status < 300:
                    raise WebhookError(f"the webhook at {host} answered HTTP {resp.status}")
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
        except TimeoutError:
            raise  # the guardrails plugin reports it as a timeout
        except aiohttp.ClientProxyConnectionError as exc:
            raise WebhookError(
                f"cannot connect to the outbound proxy {proxy.describe()} to reach the webhook "
                f"at {host}: {exc.os_error}"
            ) from None
        except aiohttp.ClientHttpProxyError as exc:
            raise WebhookError(
                f"the outbound proxy {proxy.describe()} refused to tunnel to the webhook at "
                f"{host}: HTTP {exc.status}"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            # The resolver's SSRF refusal, or a plain connection failure.
            raise WebhookError(f"cannot connect to the webhook at {host}: {exc.os_error}") from exc
        except aiohttp.ClientError as exc:
            raise WebhookError(
                f"the webhook at {host} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if len(raw) > MAX_ANSWER_BYTES:
            raise WebhookError(f"the webhook at {host} answered more than {MAX_ANSWER_BYTES} bytes")
        return parse_answer(raw, host)


def parse_answer(raw: bytes, host: str = "the webhook") -> Verdict:
    """The verdict in a webhook's answer body, or :class:`WebhookError` saying what is wrong."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WebhookError(f"the webhook at {host} answered with invalid JSON ({exc})") from None
    if not isinstance(answer, dict):
        kind = type(answer).__name__
        raise WebhookError(f"the webhook at {host} answered a JSON {kind}, not an object")
    decision = answer.get("decision")
    if decision not in _DECISIONS:
        raise WebhookError(
            f"the webhook at {host} answered decision {decision!r}; expected one of "
            "allow, block, modify"
        )
    reason = answer.get("reason")
    if reason is not None and not isinstance(reason, str):
        reason = str(reason)
    content = answer.get("modified_content")
    if decision == "modify" and not isinstance(content, dict):
        raise WebhookError(
            f"the webhook at {host} answered modify without a modified_content object"
        )
    return Verdict(decision, reason or "", "webhook", content if decision == "modify" else None)
