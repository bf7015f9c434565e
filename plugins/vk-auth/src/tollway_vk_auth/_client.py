"""The gateway's client for the control plane's internal API (protocol: SPEC §3).

Every request is signed with ``LW_GATEWAY_INTERNAL_SECRET`` and every response's signature is
verified. Failures come out as one of two exceptions:

* :class:`KeyRejected` — the control plane answered, and the answer is "this key may not be
  used" (401/403/404 from ``resolve-key``, 403/404 from ``config``). The cache evicts at once.
* :class:`ControlPlaneUnavailable` — no usable answer: connection refused, timeout, 5xx, a
  response whose signature does not verify, a refused request signature. The cache keeps serving
  what it has (stale-while-error); ``error_class`` says which kind of failure it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import attrs
import orjson

from tollway.signing import SignatureError, signed_headers, verify

__all__ = [
    "ChangeEvent",
    "ConfigResult",
    "ControlPlaneClient",
    "ControlPlaneUnavailable",
    "KeyRejected",
    "Resolved",
]

_PREFIX = "/api/internal/gateway"
_REJECTING = frozenset({401, 403, 404})


class ControlPlaneUnavailable(Exception):
    """The control plane gave no usable answer.

    ``error_class`` is ``transport`` (connect error, timeout, 5xx), ``signature`` (a signature
    did not verify either way: the two sides' ``LW_GATEWAY_INTERNAL_SECRET`` differ) or
    ``protocol`` (an answer this gateway does not understand).
    """

    def __init__(self, reason: str, error_class: str = "transport") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class


class KeyRejected(Exception):
    """The control plane refused the key (``code``: ``unknown_key``, ``revoked``, ``disabled``,
    ``expired``, …); ``message`` is the control plane's text, safe to show the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@attrs.frozen
class Resolved:
    """A ``resolve-key`` answer."""

    vk_id: str
    revision: int
    jwt: str = attrs.field(repr=False)
    #: The JWT's expiry (unix seconds).
    expires_at: float


@attrs.frozen
class ConfigResult:
    """A ``config/{vk_id}`` answer: a new bundle, or ``not_modified`` (304)."""

    bundle: dict[str, Any] | None
    etag: str | None
    not_modified: bool = False


@attrs.frozen
class ChangeEvent:
    id: int
    kind: str
    vk_id: str | None = None
    provider_id: str | None = None


def _error_of(body: bytes) -> tuple[str, str, str]:
    """(type, code, message) of a SPEC error envelope; empty strings when it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", "", ""
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return "", "", ""
    return (
        str(err.get("type") or ""),
        str(err.get("code") or err.get("type") or ""),
        str(err.get("message") or ""),
    )


class ControlPlaneClient:
    """Signed calls to ``<base_url>/api/internal/gateway/*`` over one aiohttp session."""

    def __init__(
        self,
        base_url: str,
        internal_secret: bytes,
        node_id: str,
        *,
        connect_timeout: float = 1.0,
        total_timeout: float = 3.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path.rstrip("/")
        self._secret = internal_secret
        self.node_id = node_id
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session (call from ``gateway_started``: it needs the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=60),
                auto_decompress=True,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the three endpoints --------------------------------------------------------------

    async def resolve_key(self, secret: str) -> Resolved:
        """``POST resolve-key``: who owns this secret, and a JWT to fetch its bundle with."""
        body = orjson.dumps({"key_presented": secret, "gateway_node_id": self.node_id})
        status, _, data = await self._call("POST", "/resolve-key", body=body)
        if status == 200:
            try:
                doc = orjson.loads(data)
                return Resolved(
                    vk_id=str(doc["vk_id"]),
                    revision=int(doc.get("revision") or 0),
                    jwt=str(doc["jwt"]),
                    expires_at=float(doc["expires_at"]),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ControlPlaneUnavailable(
                    f"resolve-key answered 200 with an unexpected body ({exc!r})", "protocol"
                ) from None
        if status in _REJECTING:
            _, code, message = _error_of(data)
            raise KeyRejected(status, code or "unknown_key", message)
        raise self._unexpected("resolve-key", status, data)

    async def fetch_config(self, vk_id: str, jwt: str, etag: str | None) -> ConfigResult:
        """``GET config/{vk_id}`` with the key's JWT; ``If-None-Match`` when ``etag`` is known."""
        headers = {"Authorization": f"Bearer {jwt}"}
        if etag:
            headers["If-None-Match"] = etag
        status, resp_headers, data = await self._call(
            "GET", f"/config/{vk_id}", extra_headers=headers
        )
        if status == 304:
            return ConfigResult(None, resp_headers.get("ETag") or etag, not_modified=True)
        if status == 200:
            try:
                bundle = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise ControlPlaneUnavailable(
                    f"config/{vk_id} answered 200 with a body that is not JSON ({exc})", "protocol"
                ) from None
            if not isinstance(bundle, dict) or bundle.get("vk_id") != vk_id:
                raise ControlPlaneUnavailable(
                    f"config/{vk_id} answered 200 with a bundle for another key", "protocol"
                )
            return ConfigResult(bundle, resp_headers.get("ETag"))
        if status in (403, 404):
            _, code, message = _error_of(data)
            raise KeyRejected(status, code or "unknown_key", message)
        raise self._unexpected(f"config/{vk_id}", status, data)

    async def changes(self, since: int, timeout_s: int) -> tuple[int, list[ChangeEvent]]:
        """``GET changes?since=&timeout_s=`` (long poll): the new cursor and the events."""
        timeout = aiohttp.ClientTimeout(total=timeout_s + 5, sock_connect=self._connect_timeout)
        status, _, data = await self._call(
            "GET", "/changes", query=f"since={since}&timeout_s={timeout_s}", client_timeout=timeout
        )
        if status != 200:
            raise self._unexpected("changes", status, data)
        try:
            doc = orjson.loads(data)
            cursor = int(doc["cursor"])
            events = [
                ChangeEvent(
                    id=int(e.get("id", 0)),
                    kind=str(e.get("kind", "")),
                    vk_id=e.get("vk_id"),
                    provider_id=e.get("provider_id"),
                )
                for e in doc.get("events") or ()
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ControlPlaneUnavailable(
                f"changes answered 200 with an unexpected body ({exc!r})", "protocol"
            ) from None
        return cursor, events

    async def active_keys(self, cursor: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """``GET keys?cursor=&limit=``: one page of active keys with their bundles (the auth
        cache bootstrap) and the next page's cursor (None: last page)."""
        query = urlencode({"cursor": cursor, "limit": limit})
        timeout = aiohttp.ClientTimeout(total=10, sock_connect=self._connect_timeout)
        status, _, data = await self._call("GET", "/keys", query=query, client_timeout=timeout)
        if status != 200:
            raise self._unexpected("keys", status, data)
        try:
            doc = orjson.loads(data)
            keys = [k for k in doc["keys"] if isinstance(k, dict)]
            next_cursor = doc.get("next_cursor")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ControlPlaneUnavailable(
                f"keys answered 200 with an unexpected body ({exc!r})", "protocol"
            ) from None
        return keys, (str(next_cursor) if next_cursor else None)

    async def probe(self) -> None:
        """A quick signed round trip (``changes?since=-1``), for readiness: raises
        :class:`ControlPlaneUnavailable` unless the control plane answers within 1.5 s."""
        timeout = aiohttp.ClientTimeout(total=1.5, sock_connect=self._connect_timeout)
        status, _, data = await self._call(
            "GET", "/changes", query="since=-1&timeout_s=0", client_timeout=timeout
        )
        if status != 200:
            raise self._unexpected("changes", status, data)

    # --- plumbing -------------------------------------------------------------------------

    def _unexpected(self, what: str, status: int, data: bytes) -> ControlPlaneUnavailable:
        _, _, message = _error_of(data)
        detail = f": {message}" if message else ""
        return ControlPlaneUnavailable(f"{what} answered HTTP {status}{detail}", "protocol")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        query: str = "",
        extra_headers: Mapping[str, str] | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        session = self._session
        if session is None:
            raise ControlPlaneUnavailable("the control-plane client is not started")
        full_path = f"{self._base_path}{_PREFIX}{path}"
        headers = dict(signed_headers(self._secret, method, full_path, body))
        if body:
            headers["Content-Type"] = "application/json"
        if extra_headers:
            headers.update(extra_headers)
        url = f"{self.base_url}{_PREFIX}{path}"
        if query:
            url = f"{url}?{query}"
        try:
            async with session.request(
                method,
                url,
                data=body or None,
                headers=headers,
                timeout=client_timeout or self._timeout,
            ) as resp:
                data = await resp.read()
                status = resp.status
                resp_headers = resp.headers
        except TimeoutError:
            raise ControlPlaneUnavailable(
                f"timeout calling {self.base_url}{_PREFIX}{path}"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ControlPlaneUnavailable(
                f"{type(exc).__name__} calling {self.base_url}{_PREFIX}{path}: {exc}"
            ) from None
        if status >= 500 or status == 429:
            _, _, message = _error_of(data)
            detail = f": {message}" if message else ""
            raise ControlPlaneUnavailable(f"{path.lstrip('/')} answered HTTP {status}{detail}")
        try:
            verify(self._secret, method, full_path, resp_headers, data)
        except SignatureError as exc:
            kind, _, message = _error_of(data)
            if kind == "invalid_signature":
                raise ControlPlaneUnavailable(
                    f"the control plane refused this gateway's request signature ({message}); "
                    "LW_GATEWAY_INTERNAL_SECRET must be the same on the gateway and the "
                    "control plane",
                    "signature",
                ) from None
            if status == 404:
                raise ControlPlaneUnavailable(
                    f"{self.base_url} does not serve the internal gateway API (HTTP 404); point "
                    "LW_GATEWAY_BASE_URL at a Tollway control plane",
                    "protocol",
                ) from None
            raise ControlPlaneUnavailable(
                f"the control plane's answer to {path.lstrip('/')} (HTTP {status}) is not "
                f"validly signed ({exc}); LW_GATEWAY_INTERNAL_SECRET must be the same on the "
                "gateway and the control plane",
                "signature",
            ) from None
        return status, resp_headers, data
