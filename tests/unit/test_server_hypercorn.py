"""What the gateway changes in how Hypercorn serves: the ``date`` and ``server`` headers of
every response formatted once per second, and the keep-alive timer without a task of its own."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from tollway._server import _ServerConfig


def test_date_and_server_headers_are_current_and_a_fresh_list_each_time() -> None:
    config = _ServerConfig()
    first = config.response_headers("h11")
    headers = dict(first)
    assert headers[b"server"] == b"hypercorn-h11"
    sent = parsedate_to_datetime(headers[b"date"].decode()).timestamp()
    assert abs(sent - time.time()) <= 2
    first.append((b"x-mutated", b"1"))  # Hypercorn's callers may extend what they get
    assert (b"x-mutated", b"1") not in config.response_headers("h11")
    assert dict(config.response_headers("h2"))[b"server"] == b"hypercorn-h2"


def test_the_date_moves_on_with_the_clock() -> None:
    config = _ServerConfig()
    before = dict(config.response_headers("h11"))[b"date"]
    deadline = time.time() + 3
    while time.time() < deadline:
        now = dict(config.response_headers("h11"))[b"date"]
        if now != before:
            break
        time.sleep(0.05)
    assert now != before


def test_the_keep_alive_timer_closes_an_idle_connection_on_time_or_when_stopping() -> None:
    import asyncio
    from types import SimpleNamespace

    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.asyncio.worker_context import EventWrapper

    from tollway._server import lighter_idle_timeout

    assert lighter_idle_timeout()
    assert lighter_idle_timeout()  # idempotent
    assert getattr(TCPServer._idle_timeout, "_tollway", False)

    async def closed_after(keep_alive: float, terminate_after: float | None) -> float:
        loop = asyncio.get_running_loop()
        closed: list[float] = []
        terminated = EventWrapper()

        async def close() -> None:
            closed.append(loop.time())

        server = SimpleNamespace(
            config=SimpleNamespace(keep_alive_timeout=keep_alive),
            context=SimpleNamespace(terminated=terminated),
            _initiate_server_close=close,
        )
        started = loop.time()
        idle = asyncio.ensure_future(TCPServer._idle_timeout(server))  # type: ignore[arg-type]
        if terminate_after is not None:
            await asyncio.sleep(terminate_after)
            await terminated.set()
        await asyncio.wait_for(idle, 5)
        assert len(closed) == 1
        return closed[0] - started

    # Idle for the keep-alive timeout: closed then, not before.
    assert 0.2 <= asyncio.run(closed_after(0.2, None)) < 1.5
    # The server stops while the connection is idle: closed at once.
    assert asyncio.run(closed_after(30, 0.05)) < 1.5

    async def cancelled() -> bool:
        terminated = EventWrapper()
        server = SimpleNamespace(
            config=SimpleNamespace(keep_alive_timeout=30),
            context=SimpleNamespace(terminated=terminated),
            _initiate_server_close=lambda: asyncio.sleep(0),
        )
        idle = asyncio.ensure_future(TCPServer._idle_timeout(server))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        idle.cancel()  # a request arrived: Hypercorn cancels the timer
        try:
            await idle
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(cancelled())
