"""The hot path: model calls served straight from ASGI, everything else through Quart.

``POST /v1/chat/completions``, ``/v1/messages``, ``/v1/responses``, ``/v1/embeddings`` and the
other fixed model-call paths (``tollway._intake.ENDPOINT_PATHS``) are answered here without
Quart's request/response objects (about a third of the per-request CPU in a profile of the
Quart route); health, metrics, ``/v1/models``, plugin routes and errors for
unknown paths stay on Quart. Lifespan events go to Quart, which runs start-up and shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from tollway._context import RequestContext
from tollway._intake import ENDPOINT_PATHS
from tollway._reply import CIHeaders, Reply
from tollway.gateway import Gateway

__all__ = ["GatewayASGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: Non-streaming endpoints whose answer need not be JSON (the heartbeat pads JSON only).
_NOT_JSON = frozenset({"transcriptions"})


class ClientDisconnected(asyncio.CancelledError):
    """The client went away while its request body was still arriving."""


class GatewayASGI:
    """ASGI app: the gateway's fast path in front of its Quart app."""

    def __init__(self, gateway: Gateway, app: ASGIApp) -> None:
        self.gateway = gateway
        self.app = app
        self.heartbeat_seconds = gateway.settings.server.heartbeat_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = ENDPOINT_PATHS.get(scope["path"])
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
        #: The response went out in full. Hypercorn queued the stream's ``http.disconnect`` as
        #: it closed the stream, which ends the watcher on its next step: it is left to end so
        #: (a cancellation would unwind it and the server's queue with an exception), and only
        #: cancelled after that step (a no-op then) in case a server queued nothing.
        sent: list[bool] = []

        def on_gone(fut: asyncio.Task[None]) -> None:
            if not fut.cancelled() and not task.done() and not sent:
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
        beat: Heartbeat | None = None
        if self.heartbeat_seconds > 0:
            beat = Heartbeat(gateway, send, self.heartbeat_seconds)
        try:
            reply = await gateway.handle(
                endpoint,
                "POST",
                scope["path"],
                scope.get("query_string", b""),
                headers,
                chunks(),
                None if beat is None else beat.start,
            )
            if beat is not None and await beat.stop():
                await send({"type": "http.response.body", "body": reply.body})
            else:
                await _send_reply(reply, send)
            sent.append(True)
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
            if beat is not None:
                beat.cancel()
            for watcher in watch:
                if sent:
                    asyncio.get_running_loop().call_soon(watcher.cancel)
                else:
                    watcher.cancel()
            if reply is not None and reply.stream is None:
                gateway.finish(reply.ctx)


class Heartbeat:
    """``SERVER_HEARTBEAT_SECONDS``: keep a slow non-streaming call's connection busy.

    Once the body is parsed and the call does not stream, a timer runs; if the answer is not
    ready when it fires, the response starts (200, ``X-LangWatch-Heartbeat-Active: true``, no
    length) and a space goes out every period until it is. JSON parsers skip leading
    whitespace, so both SDKs read the body as usual; an error found later can only be a JSON
    error body under the committed 200 (SPEC §2; the operator guide says so).
    """

    def __init__(self, gateway: Gateway, send: Send, period: float) -> None:
        self.gateway = gateway
        self.send = send
        self.period = period
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.started = False

    def start(self, ctx: RequestContext) -> None:
        # A transcription may answer plain text (text, srt, vtt): never pad it as JSON.
        if not ctx.stream and ctx.endpoint not in _NOT_JSON:
            self.task = asyncio.ensure_future(self._run(ctx))

    async def _run(self, ctx: RequestContext) -> None:
        try:
            await self._beat(ctx)
        except Exception:  # the client is gone: the request's own path finds out too
            return

    async def _beat(self, ctx: RequestContext) -> None:
        send = self.send
        while True:
            try:
                await asyncio.wait_for(self.done.wait(), self.period)
                return
            except TimeoutError:
                pass
            if not self.started:
                self.started = True
                headers = [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in self.gateway.base_headers(ctx).items()
                ]
                headers.append((b"content-type", b"application/json"))
                headers.append((b"x-langwatch-heartbeat-active", b"true"))
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b" ", "more_body": True})

    async def stop(self) -> bool:
        """Stop beating (never mid-send); True when the response has already started."""
        self.done.set()
        if self.task is not None:
            await self.task
        return self.started

    def cancel(self) -> None:
        self.done.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()


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
