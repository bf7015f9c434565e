"""``tollway control-plane``: the control plane on its own (Quart on Hypercorn)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from contextlib import suppress

import orjson
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from tollway_control_plane import console_page
from tollway_control_plane.ingest import blueprint as otel_blueprint
from tollway_control_plane.protocol import mount
from tollway_control_plane.runtime import ControlPlane

__all__ = ["create_app", "run"]

log = logging.getLogger("tollway_control_plane")


def create_app(cp: ControlPlane) -> Quart:
    """The standalone control plane's app: internal protocol, admin API, ``/api/health``, the
    trace receiver and ``/metrics`` (Prometheus)."""
    app = Quart("tollway_control_plane")
    app.config.update(MAX_CONTENT_LENGTH=4 * 1024 * 1024, PROVIDE_AUTOMATIC_OPTIONS=False)
    mount(app, cp)
    app.register_blueprint(otel_blueprint)  # /api/otel/v1/traces: the trace receiver

    @app.get("/metrics")
    async def metrics() -> Response:
        # prometheus-client's default registry: control_plane_otel_* (the receiver) and the
        # process collectors.
        import prometheus_client

        from tollway_control_plane import _metrics  # noqa: F401 (registers the counters)

        return Response(
            prometheus_client.generate_latest(prometheus_client.REGISTRY),
            status=200,
            content_type="text/plain; version=0.0.4; charset=utf-8",
        )

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = (
            f"no route for {request.method} {request.path}"
            if status == 404
            else exc.description or "bad request"
        )
        body = {"error": {"type": exc.name.lower().replace(" ", "_"), "message": message}}
        return Response(orjson.dumps(body), status=status, content_type="application/json")

    return app


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket (so "listening on" is true when printed, and ``--port 0`` works)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address, family=family, backlog=1024)
    except OSError as exc:
        raise SystemExit(f"tollway control-plane: cannot listen on {host}:{port}: {exc}") from None


def run(cp: ControlPlane, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; long polls answer at once when stopping."""
    app = create_app(cp)
    try:
        sock = _listen(host, port)
    except SystemExit:
        cp.close()
        raise
    bound_port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5
    stopping = False
    cp.stopping = lambda: stopping

    async def main() -> None:
        nonlocal stopping
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            nonlocal stopping
            stopping = True
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await serve(app, config, shutdown_trigger=stop.wait)

    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    print(f"tollway control-plane listening on http://{shown}:{bound_port}", flush=True)
    page = console_page()
    print(f"console: http://{shown}:{bound_port}{page['page']} ({page['note']})", flush=True)
    print(f"store: {cp.store.db!r}", file=sys.stderr, flush=True)
    try:
        asyncio.run(main())
    finally:
        with suppress(OSError):  # hypercorn closes the descriptor it was given
            sock.close()
        cp.close()
