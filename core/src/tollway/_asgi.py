"""The hot path: model calls served straight from ASGI, everything else through Quart.

``POST /v1/chat/completions``, ``/v1/messages``, ``/v1/responses`` and ``/v1/embeddings`` are
answered here without Quart's request/response objects (about a third of the per-request CPU
in a profile of the Quart route); health, metrics, ``/v1/models``, plugin routes and errors for
unknown paths stay on Quart. Lifespan events go to Quart, which runs start-up and shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from tollway.gateway import _ENDPOINT_PATHS, CIHeaders, Gateway, Reply

__all__ = ["GatewayASGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientDisconnected(asyncio.CancelledError):
    """The client went away while its request body was still arriving."""


class GatewayASGI:
    """ASGI app: the gateway's fast path in front of its Quart app."""

    def __init__(self, gateway: Gateway, app: ASGIApp) -> None:
        self.gateway = gateway
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = _ENDPOINT_PATHS.get(scope["path"])
            if endpoint is not None:
                await self._serve(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, endpoint: str, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        task = asyncio.current_task()
        assert task is not None
        watch: list[asyncio.Task[None]] = []
        gone: list[bool] = []

        def on_gone(fut: asyncio.Task[None]) -> None:
            if not fut.cancelled() and not task.done():
                gone.append(True)
                task.cancel()

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected()
                body = message.get("body", b"")
                if body:
                    yield body
                if not message.get("more_body", False):
                    break
            # The body is in: from now on a disconnect cancels the request (and its upstream).
            watcher = asyncio.ensure_future(_wait_disconnect(receive))
            watcher.add_done_callback(on_gone)
            watch.append(watcher)

        headers = CIHeaders(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        )
        reply: Reply | None = None
        try:
            reply = await gateway.handle(
                endpoint,
                "POST",
                scope["path"],
                scope.get("query_string", b""),
                headers,
                chunks(),
            )
            await _send_reply(reply, send)
        except asyncio.CancelledError:
            if not gone:
                raise
            # Our own cancellation: the client left. Swallow it so the server sees a normal end.
            task.uncancel()
            if reply is not None:
                reply.ctx.client_disconnected = True
                if reply.stream is not None:
                    await reply.stream.aclose()  # type: ignore[attr-defined]
        finally:
            for watcher in watch:
                watcher.cancel()
            if reply is not None and reply.stream is None:
                gateway.finish(reply.ctx)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send_reply(reply: Reply, send: Send) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    if reply.stream is None:
        body = reply.body
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    stream = reply.stream
    async for chunk in stream:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
