"""Running the Quart app on Hypercorn with uvloop, and the SIGTERM drain of SPEC §8."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, cast

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tollway._asgi import GatewayASGI
from tollway.gateway import Gateway, create_app

__all__ = ["bind_address", "run_gateway"]

log = logging.getLogger("tollway.server")


def bind_address(addr: str) -> str:
    """``:5563`` → ``0.0.0.0:5563`` (all interfaces, as the reference); ``host:port`` kept."""
    host, _, port = addr.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"SERVER_ADDR {addr!r} must look like ':5563' or 'host:5563'")
    return f"{host or '0.0.0.0'}:{port}"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if sys.platform == "win32":  # pragma: no cover
        return None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return None
    return uvloop.new_event_loop


def run_gateway(gateway: Gateway, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain: ``/readyz`` turns 503, new connections are
    refused, in-flight requests and streams get ``SERVER_GRACEFUL_SECONDS`` to finish, then
    the outbox, spans and metrics are flushed by the plugins' ``gateway_stopping``."""
    app = create_app(gateway)
    config = Config()
    config.bind = [bind_address(gateway.settings.server.addr)]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = gateway.settings.server.graceful_seconds
    config.keep_alive_timeout = 75  # longer than common load-balancer idle timeouts

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

        if on_ready is not None:
            gateway.on_started.append(lambda: on_ready(config.bind[0]))
        await gateway.startup()
        asgi: Any = GatewayASGI(gateway, cast(Any, app))
        await serve(asgi, config, shutdown_trigger=stop.wait)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(main())
        except asyncio.CancelledError:
            pass
