"""Running the Quart app on Hypercorn with uvloop, and the SIGTERM drain of SPEC §8."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tollway import __version__
from tollway._asgi import GatewayASGI
from tollway._errors import BadRequest, GatewayError, RequestHeadersTooLarge
from tollway._gc import freeze_startup_objects, watch_pauses
from tollway._ids import request_id
from tollway._input import MAX_REQUEST_HEADER_BYTES
from tollway._lag import watch_loop_lag
from tollway._workers import (
    bound_socket,
    serves_workers,
    supervised_control_plane,
    worker_index,
)
from tollway.gateway import Gateway, create_app

__all__ = [
    "bind_address",
    "envelope_protocol_errors",
    "protocol_error_reply",
    "run_gateway",
    "serves_workers",
    "supervised_control_plane",
    "worker_index",
]

log = logging.getLogger("tollway.server")


def bind_address(addr: str) -> str:
    """``:5563`` → ``0.0.0.0:5563`` (all interfaces, as the reference); ``host:port`` kept."""
    host, _, port = addr.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"SERVER_ADDR {addr!r} must look like ':5563' or 'host:5563'")
    return f"{host or '0.0.0.0'}:{port}"


def protocol_error_reply(status: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Body and headers for a request Hypercorn refuses before the app sees it (h11's
    ``RemoteProtocolError``): 431 for a request head over the cap, 400 for anything else
    malformed. The body is the SPEC §2 envelope with the top-level ``"type": "error"`` too,
    since the path (and so the client's SDK) may be unknown."""
    err: GatewayError
    if status == 431:
        err = RequestHeadersTooLarge(
            f"the request line and headers are larger than this gateway's limit of "
            f"{MAX_REQUEST_HEADER_BYTES} bytes; send fewer or shorter headers",
            code="request_headers_too_large",
        )
    else:
        err = BadRequest(
            "the request is not valid HTTP/1.1 (a malformed request line, header or framing); "
            "check the client or any proxy in between",
            code="malformed_http_request",
        )
    rid = request_id()
    body = err.envelope(anthropic=True)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-langwatch-request-id", rid.encode()),
        (b"x-request-id", rid.encode()),
        (b"x-langwatch-gateway-request-id", rid.encode()),
        (b"x-langwatch-gateway-version", __version__.encode()),
    ]
    headers.extend((k.lower().encode(), v.encode()) for k, v in err.headers().items())
    log.info("http_protocol_error status=%d code=%s request_id=%s", status, err.code, rid)
    return body, headers


def lighter_idle_timeout() -> bool:
    """Hypercorn's keep-alive timer without a task of its own per request.

    Between two requests on a keep-alive connection Hypercorn runs ``TCPServer._idle_timeout``
    (close the connection after ``keep_alive_timeout``, or at once when the server stops): it
    waits with ``asyncio.wait_for``, which on Python 3.11 wraps the wait in one more task, made
    and cancelled on every request. This replaces the method (process-wide, idempotent) with
    the same wait under ``asyncio.timeout``, which only sets a timer. False when this
    Hypercorn has no such method (its own stays).
    """
    try:
        from hypercorn.asyncio.tcp_server import TCPServer
    except ImportError:  # pragma: no cover - a dependency
        return False

    async def _idle_timeout(self: Any) -> None:
        try:
            async with asyncio.timeout(self.config.keep_alive_timeout):
                await self.context.terminated.wait()
        except TimeoutError:
            pass
        await asyncio.shield(self._initiate_server_close())

    return _replace_method(TCPServer, "_idle_timeout", _idle_timeout)


def _replace_method(cls: Any, name: str, replacement: Callable[..., Any]) -> bool:
    """Set ``cls.name`` to ``replacement`` once (calling again changes nothing); False when
    ``cls`` has no such method, which is then left alone."""
    current = getattr(cls, name, None)
    if current is None:
        return False
    if not getattr(current, "_tollway", False):
        replacement._tollway = True  # type: ignore[attr-defined]
        setattr(cls, name, replacement)
    return True


def envelope_protocol_errors() -> bool:
    """Make Hypercorn's own HTTP/1.1 refusals (malformed request → 400, request head over
    ``h11_max_incomplete_size`` → 431) carry the SPEC §2 envelope instead of an empty body.

    Hypercorn answers those from ``H11Protocol._send_error_response`` without calling the app,
    so this replaces that method (process-wide, idempotent). False when this Hypercorn has no
    such method (the bare answer stays; the start-up log says so).
    """
    try:
        import h11
        from hypercorn.protocol.h11 import H11Protocol
    except ImportError:  # pragma: no cover - both are dependencies
        return False

    async def _send_error_response(self: Any, status_code: int) -> None:
        body, headers = protocol_error_reply(status_code)
        await self._send_h11_event(
            h11.Response(
                status_code=status_code,
                headers=[*headers, *self.config.response_headers("h11")],
            )
        )
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    return _replace_method(H11Protocol, "_send_error_response", _send_error_response)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if sys.platform == "win32":  # pragma: no cover
        return None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return None
    return uvloop.new_event_loop


class _ServerConfig(Config):
    """Hypercorn's config, with its ``date`` and ``server`` response headers formatted once
    per second and protocol rather than once per response (the date has whole seconds)."""

    _headers: tuple[int, str, list[tuple[bytes, bytes]]] = (-1, "", [])

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        at, cached_for, headers = self._headers
        if at != now or cached_for != protocol:
            headers = super().response_headers(protocol)
            self._headers = (now, protocol, headers)
        return list(headers)


def run_gateway(
    gateway: Gateway,
    *,
    on_ready: Callable[[str], None] | None = None,
    sock: socket.socket | None = None,
    parent_pid: int | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain: ``/readyz`` turns 503, new connections are
    refused, in-flight requests and streams get ``SERVER_GRACEFUL_SECONDS`` to finish, then
    the outbox, spans and metrics are flushed by the plugins' ``gateway_stopping``.

    The port is bound first (:class:`OSError` when it is taken, before any plugin starts), it
    listens once the gateway started, and only then is ``on_ready`` called: whoever reads the
    announcement can connect at once. A worker of ``serve --workers N`` passes ``sock`` (bound
    with ``SO_REUSEPORT``, not listening) and ``parent_pid`` (its supervisor: when that process
    is gone, the worker drains as if it got SIGTERM)."""
    app = create_app(gateway)
    config = _ServerConfig()
    bind = bind_address(gateway.settings.server.addr)
    listener = sock if sock is not None else bound_socket(bind, reuse_port=False)
    config.bind = [f"fd://{listener.fileno()}"]
    # A larger request head is refused by Hypercorn itself (431, enveloped below).
    config.h11_max_incomplete_size = MAX_REQUEST_HEADER_BYTES
    lighter_idle_timeout()
    if not envelope_protocol_errors():
        log.warning(
            "protocol_error_envelope_unavailable: this Hypercorn version has no "
            "H11Protocol._send_error_response; malformed requests and oversized header blocks "
            "get Hypercorn's bare 400/431 with an empty body"
        )
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = gateway.settings.server.graceful_seconds
    config.keep_alive_timeout = 75  # longer than common load-balancer idle timeouts
    # The event loop shares the GIL with background threads (the span exporter encoding a
    # batch, the store's writes). When it wakes while one of them runs, it waits up to the
    # switch interval for the GIL, several times per request: at Python's default of 5 ms that
    # was most of the p99 at 200 req/s (docs/operator-guide.md, "The GIL switch interval").
    sys.setswitchinterval(gateway.settings.server.gil_switch_interval_seconds)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        delay = gateway.settings.server.drain_delay_seconds

        async def drain(signame: str) -> None:
            log.info(
                "draining signal=%s in_flight=%d drain_delay_s=%s",
                signame,
                gateway.in_flight,
                delay,
            )
            # /readyz answers 503 during the delay so load balancers stop sending new traffic
            # before the listener closes; Hypercorn then waits up to graceful_timeout for
            # in-flight requests and streams.
            await asyncio.sleep(delay)
            stop.set()

        def on_signal(signame: str) -> None:
            if gateway.draining:
                log.warning(
                    "second %s: stopping now without waiting for in-flight requests", signame
                )
                if main_task is not None:
                    main_task.cancel()
                return
            gateway.draining = True
            tasks.add(loop.create_task(drain(signame)))

        tasks: set[asyncio.Task[None]] = set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)

        if parent_pid is not None:
            tasks.add(loop.create_task(_watch_parent(parent_pid, gateway, on_signal)))
        # Before anything announces readiness (the demo banner, the supervisor's on_ready): a
        # client that reads it connects at once.
        gateway.on_started.insert(0, freeze_startup_objects)
        try:
            await gateway.startup()
        except BaseException:
            listener.close()
            raise
        listener.listen(config.backlog)  # the kernel routes new connections here from now on
        # The port announced is the one bound (the kernel's choice for port 0).
        bound = f"{bind.rpartition(':')[0]}:{listener.getsockname()[1]}"
        listener.detach()  # Hypercorn owns the descriptor (fd://) and closes it
        if on_ready is not None:
            on_ready(bound)
        asgi: Any = GatewayASGI(gateway, cast(Any, app))
        watch_pauses(loop)
        watch_loop_lag(loop)
        await serve(asgi, config, shutdown_trigger=stop.wait)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(main())
        except asyncio.CancelledError:
            pass


async def _watch_parent(
    parent_pid: int, gateway: Gateway, on_signal: Callable[[str], None]
) -> None:
    """Drain when the supervisor that started this worker is gone (killed with SIGKILL, say):
    a worker never outlives it by more than its drain."""
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent_pid:
            break
    if not gateway.draining:  # the kernel's SIGTERM (PR_SET_PDEATHSIG) may have come first
        on_signal("supervisor_exited")
