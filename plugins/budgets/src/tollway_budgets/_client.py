"""Signed calls to the control plane's budget endpoints (SPEC §3 signing, both ways).

* ``POST /api/internal/gateway/ledger`` — a batch of ledger entries, deduplicated by request id;
* ``POST /api/internal/gateway/spend`` — ledger sums for counters this gateway starts.

Any failure (connection, timeout, non-200, an answer whose signature does not verify) raises
:class:`ControlPlaneUnavailable`; the outbox retries with back-off, the seeding falls back to a
provisional counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from tollway.ledger import LedgerInputError
from tollway.signing import SignatureError, signed_headers, verify

__all__ = [
    "ControlPlaneClient",
    "ControlPlaneUnavailable",
    "LedgerRejected",
    "LocalControlPlane",
    "embedded_base_url",
]

_PREFIX = "/api/internal/gateway"


class ControlPlaneUnavailable(Exception):
    """No usable answer from the control plane (the message says what happened)."""


class LedgerRejected(ControlPlaneUnavailable):
    """The control plane answered — and refused the request itself (HTTP ``status`` 400 or
    413): sending the same bytes again cannot succeed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def embedded_base_url(addr: str) -> str:
    """The gateway's own address as a URL it can call itself on (the embedded control plane):
    ``:5563`` and ``0.0.0.0:5563`` → ``http://127.0.0.1:5563``; ``[::]:5563`` →
    ``http://[::1]:5563``; a specific host is kept."""
    host, _, port = addr.strip().rpartition(":")
    host = host.strip()
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::", "[::0]"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class ControlPlaneClient:
    """One aiohttp session; every request signed, every answer's signature verified."""

    def __init__(
        self, base_url: str, internal_secret: bytes, node_id: str, *, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path.rstrip("/")
        self._secret = internal_secret
        self.node_id = node_id
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=2.0)
        #: A seed runs on an admission's path: it gives up sooner than a ledger batch.
        self.spend_timeout = 2.0
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=16)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send_ledger(self, entries: Sequence[dict[str, Any]]) -> int:
        """Hand a batch over; returns how many the control plane accepted (all, or raises)."""
        body = orjson.dumps({"gateway_node_id": self.node_id, "entries": list(entries)})
        doc = await self._post("/ledger", body)
        accepted = doc.get("accepted") if isinstance(doc, dict) else None
        if accepted != len(entries):
            raise ControlPlaneUnavailable(
                f"ledger answered {doc!r} for a batch of {len(entries)} entries"
            )
        return int(accepted)

    async def spend(self, queries: Sequence[dict[str, Any]]) -> list[int]:
        """Ledger sums (micro-USD), one per query."""
        doc = await self._post(
            "/spend", orjson.dumps({"queries": list(queries)}), timeout=self.spend_timeout
        )
        sums = doc.get("spend_micro_usd") if isinstance(doc, dict) else None
        if not isinstance(sums, list) or len(sums) != len(queries):
            raise ControlPlaneUnavailable(f"spend answered {doc!r}")
        return [int(s) for s in sums]

    async def _post(self, path: str, body: bytes, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        session = self._session
        if session is None:
            raise ControlPlaneUnavailable("the control-plane client is not started")
        full_path = f"{self._base_path}{_PREFIX}{path}"
        headers = dict(signed_headers(self._secret, "POST", full_path, body))
        headers["Content-Type"] = "application/json"
        url = f"{self.base_url}{_PREFIX}{path}"
        client_timeout = (
            aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 2.0))
            if timeout is not None
            else None
        )
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=client_timeout or self._timeout
            ) as resp:
                data = await resp.read()
                status = resp.status
                resp_headers = resp.headers
        except TimeoutError:
            raise ControlPlaneUnavailable(f"timeout calling {url}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ControlPlaneUnavailable(f"{type(exc).__name__} calling {url}: {exc}") from None
        try:
            verify(self._secret, "POST", full_path, resp_headers, data)
        except SignatureError as exc:
            raise ControlPlaneUnavailable(
                f"{url} answered HTTP {status} without a valid signature ({exc}); "
                "LW_GATEWAY_INTERNAL_SECRET must be the same on the gateway and the control "
                "plane, and the control plane must be tollway-control-plane ≥ 0.1 with the "
                "budget endpoints"
            ) from None
        if status in (400, 413):
            raise LedgerRejected(
                status, f"{url} refused the request (HTTP {status}): {data[:300]!r}"
            )
        if status != 200:
            raise ControlPlaneUnavailable(
                f"{url} answered HTTP {status}: {data[:300].decode('utf-8', 'replace')}"
            )
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ControlPlaneUnavailable(f"{url} answered a body that is not JSON") from None


class LocalControlPlane:
    """The same interface as :class:`ControlPlaneClient`, over an in-process
    :class:`tollway.ledger.Ledger` (the embedded control plane offers one): no HTTP to the
    gateway's own port, so a flush also works while the gateway stops, and costs a thread hop,
    not a request.
    """

    def __init__(self, ledger: Any, node_id: str) -> None:
        self._ledger = ledger
        self.node_id = node_id
        self.spend_timeout = 2.0
        self.base_url = "embedded"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send_ledger(self, entries: Sequence[dict[str, Any]]) -> int:
        try:
            return int(await self._ledger.record(list(entries), self.node_id))
        except LedgerInputError as exc:
            raise LedgerRejected(400, exc.message) from exc
        except Exception as exc:  # the store failed: keep the batch, retry with back-off
            raise ControlPlaneUnavailable(f"embedded ledger: {type(exc).__name__}: {exc}") from exc

    async def spend(self, queries: Sequence[dict[str, Any]]) -> list[int]:
        try:
            return [int(s) for s in await self._ledger.spend(list(queries))]
        except Exception as exc:
            raise ControlPlaneUnavailable(f"embedded spend: {type(exc).__name__}: {exc}") from exc
