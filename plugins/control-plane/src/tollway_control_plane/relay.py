"""The control plane's HTTP API on a worker's port under ``tollway serve --workers N``.

With one process the embedded control plane answers on the gateway's port: the admin API
(``/api/admin/…``), the internal protocol (``/api/internal/gateway/…``, for other gateways) and
``/api/health`` and the console (``/console/…``). With several workers the control plane runs in
a process of its own on a loopback port (one writer for the store), and every worker relays
those paths to it, so the gateway's port answers them as before. Nothing else of that process
(its ``/metrics``, its trace receiver) is exposed.

The relay forwards the method, path, query string, headers (``Host`` included: the console's
same-origin check and redirects see the gateway's address) and body as they came (signatures of
the internal protocol cover the path, which is kept) and returns the answer as it is, apart from
hop-by-hop headers. It also sends the client's address in :data:`RELAYED_FOR`, replacing any
such header from the client; :func:`client_address` believes it only in the supervisor's
control plane process and from a loopback peer (the console's sign-in throttle counts per client,
not per relay). A control plane that does not answer gives 503 in the SPEC error envelope.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
from quart import Quart, Response, request
from werkzeug.datastructures import Headers

from tollway.server import serves_workers
from tollway_control_plane.admin import PREFIX as ADMIN_PREFIX
from tollway_control_plane.protocol import PREFIX as INTERNAL_PREFIX

if TYPE_CHECKING:
    import httpx

__all__ = ["RELAYED_FOR", "client_address", "mount_relay"]

#: The header carrying the client's address from a worker's relay to the control plane.
RELAYED_FOR = "x-tollway-relayed-for"
_CONSOLE_PREFIX = "/console"
_LOOPBACK = frozenset({"127.0.0.1", "::1"})

log = logging.getLogger("tollway_control_plane")

#: Longer than the change feed's long poll, so a relayed poll is never cut short (seconds:
#: the whole exchange, then connecting).
_TIMEOUT_S, _CONNECT_TIMEOUT_S = 120.0, 5.0
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        # httpx hands over the decoded body.
        "content-encoding",
    }
)


def mount_relay(app: Quart, base_url: str) -> None:
    """Relay the control plane's paths on ``app`` to the control plane at ``base_url``."""
    # httpx (and the rich/pygments its package imports) only where a relay is mounted, a
    # worker of ``serve --workers N``: the console imports this module for client_address.
    import httpx

    timeout = httpx.Timeout(_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
    client: httpx.AsyncClient | None = None

    async def relay(rest: str = "") -> Response:
        nonlocal client
        if client is None:
            # trust_env=False: a loopback hop never goes through HTTP(S)_PROXY.
            client = httpx.AsyncClient(base_url=base_url, timeout=timeout, trust_env=False)
        body = await request.get_data(cache=False)
        target = request.path
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() != RELAYED_FOR
        ]
        headers.append((RELAYED_FOR, request.remote_addr or ""))
        try:
            answer = await client.request(request.method, target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("control_plane_relay_failed path=%s %s", request.path, type(exc).__name__)
            envelope = {
                "error": {
                    "type": "service_unavailable",
                    "code": "control_plane_unavailable",
                    "message": "this gateway's control plane process did not answer; try again "
                    "in a moment (the supervisor restarts it)",
                    "param": None,
                }
            }
            return Response(
                orjson.dumps(envelope),
                status=503,
                content_type="application/json",
                headers={"retry-after": "1"},
            )
        out = Headers(
            [
                (k, v)
                for k, v in answer.headers.multi_items()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "host"
            ]
        )
        return Response(answer.content, status=answer.status_code, headers=out)

    app.add_url_rule("/api/health", "tollway_cp_relay_health", relay, methods=["GET"])
    prefixes = (("admin", ADMIN_PREFIX), ("internal", INTERNAL_PREFIX))
    for name, prefix in (*prefixes, ("console", _CONSOLE_PREFIX)):
        app.add_url_rule(prefix, f"tollway_cp_relay_{name}_root", relay, methods=_METHODS)
        app.add_url_rule(f"{prefix}/", f"tollway_cp_relay_{name}_slash", relay, methods=_METHODS)
        app.add_url_rule(
            f"{prefix}/<path:rest>", f"tollway_cp_relay_{name}", relay, methods=_METHODS
        )


def client_address() -> str:
    """The address of the client of the current request: the relayed one when this is the
    control plane of a ``serve --workers N`` supervisor and the request came from a loopback
    relay, else the peer's own."""
    peer = request.remote_addr or "?"
    if peer in _LOOPBACK and serves_workers():
        relayed = request.headers.get(RELAYED_FOR, "").strip()
        if relayed:
            return relayed
    return peer
