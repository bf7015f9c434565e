"""Service-account OAuth2 access tokens (google-auth over requests).

Imported when a vertex provider is configured (:meth:`VertexProvider._token_source`), so a
gateway without one never loads google-auth, requests and the cryptography they pull in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from tollway import UpstreamConnectError, UpstreamTimeoutError
from tollway.outbound import OutboundPolicy, OutboundRefused
from tollway_provider_vertex._adapter import SCOPE, ServiceAccountRefused

__all__ = ["REFRESH_MARGIN_S", "TOKEN_TIMEOUT_S", "TokenSource"]

#: A cached token is refreshed this long before it expires.
REFRESH_MARGIN_S = 300.0
#: Timeout of one token endpoint request (google-auth may retry a transient failure).
TOKEN_TIMEOUT_S = 20.0


class _TimeoutRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our timeout on every token request."""

    def __init__(self, session: requests.Session, timeout: float) -> None:
        super().__init__(session)
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        return super().__call__(  # type: ignore[no-untyped-call]
            url, method, body, headers, timeout=self._timeout, **kwargs
        )


class _GuardedSession(requests.Session):
    """The token endpoint's session: never follows a redirect (the signed assertion must not
    travel on), and with ``policy`` checks the URL and the addresses its host resolves to with
    the gateway's SSRF guard before sending (in the refresh's worker thread)."""

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        super().__init__()
        self.policy = policy

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False
        if self.policy is not None:
            self.policy.check_resolved(str(url), "token_uri")
        return super().request(method, url, *args, **kwargs)


class TokenSource:
    """OAuth2 access tokens for one service account.

    A token is cached until :data:`REFRESH_MARGIN_S` before it expires; refreshing runs in a
    worker thread (google-auth's transport is blocking) under a lock, so concurrent requests
    share one refresh. The private key never leaves the google-auth credentials object.
    ``policy``: the SSRF guard the token endpoint is checked with when connecting.
    """

    def __init__(
        self,
        info: Mapping[str, Any],
        *,
        timeout: float = TOKEN_TIMEOUT_S,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            dict(info), scopes=[SCOPE]
        )
        self.email = str(info.get("client_email") or "")
        self.token_host = urlsplit(str(info.get("token_uri") or "")).netloc
        self.timeout = timeout
        self._session = _GuardedSession(policy)
        # The gateway decides the proxy (see :attr:`proxy`), not requests' reading of the
        # environment, which knows no LW_GATEWAY_OUTBOUND_PROXY or provider config.proxy.
        self._session.trust_env = False
        self.token_uri = str(info.get("token_uri") or "")
        #: The outbound proxy for the token endpoint (None: direct); set per attempt.
        self.proxy: str | None = None
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0  # time.monotonic()
        #: How many refreshes ran (for tests and metrics).
        self.refreshes = 0

    def _fresh(self) -> bool:
        return self._token is not None and time.monotonic() < self._expires_at - REFRESH_MARGIN_S

    async def token(self) -> str:
        """A valid access token, refreshed when needed."""
        if self._fresh():
            return self._token  # type: ignore[return-value]
        async with self._lock:
            if self._fresh():
                return self._token  # type: ignore[return-value]
            try:
                token, lifetime = await asyncio.wait_for(
                    asyncio.to_thread(self._refresh), self.timeout * 2
                )
            except google.auth.exceptions.RefreshError as exc:
                raise ServiceAccountRefused(
                    f"Google's token endpoint refused the service account {self.email} "
                    f"({_first_line(exc)}); check that the key is current and the account "
                    "is enabled"
                ) from None
            except OutboundRefused as exc:
                raise UpstreamConnectError(
                    f"the token endpoint of the service account {self.email} is refused: {exc}"
                ) from None
            except (TimeoutError, requests.Timeout):
                raise UpstreamTimeoutError(
                    f"no access token from {self.token_host} in time for the service account "
                    f"{self.email}"
                ) from None
            except (google.auth.exceptions.TransportError, requests.RequestException) as exc:
                raise UpstreamConnectError(
                    f"cannot get an access token from {self.token_host} for the service "
                    f"account {self.email}: {type(exc).__name__}"
                ) from None
            self._token = token
            self._expires_at = time.monotonic() + lifetime
            return token

    def _refresh(self) -> tuple[str, float]:
        self._session.proxies = {"http": self.proxy, "https": self.proxy} if self.proxy else {}
        credentials = self._credentials
        credentials.refresh(_TimeoutRequest(self._session, self.timeout))
        self.refreshes += 1
        token = str(credentials.token)
        expiry = credentials.expiry  # naive UTC
        lifetime = 3600.0
        if isinstance(expiry, dt.datetime):
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            lifetime = (expiry - now).total_seconds()
        return token, lifetime


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.splitlines()[0][:300] if text else type(exc).__name__
