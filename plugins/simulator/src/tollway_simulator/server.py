"""The simulator's aiohttp server: routing, faults, SSE writing, introspection under ``/_sim/``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from aiohttp import web

from tollway_simulator import (
    anthropic_wire,
    azure_wire,
    bedrock_wire,
    gemini_wire,
    openai_wire,
    vertex_wire,
)
from tollway_simulator.common import (
    JSON_CT,
    Call,
    JsonReply,
    PrefixMemory,
    Reply,
    StreamReply,
)
from tollway_simulator.errors import (
    Flavor,
    error_reply,
    html_fault_reply,
    provider_headers,
    status_fault_reply,
)
from tollway_simulator.faults import Fault, FaultMix, parse_fault, parse_fault_mix, pick_fault
from tollway_simulator.fixtures import fixture_events, fixture_names

MAX_RECORDED = 200
MAX_BODY_BYTES = 64 * 1024 * 1024
LISTENING_PREFIX = "tollway-simulator listening on "

H_FAULT = "x-simulator-fault"
H_LATENCY = "x-simulator-latency-ms"
H_EVENT_DELAY = "x-simulator-event-delay-ms"
H_TOOL = "x-simulator-tool"
H_REPLAY = "x-simulator-replay"
H_OUTPUT_WORDS = "x-simulator-output-words"

_OPENAI_MALFORMED = b'data: {"id":"chatcmpl-malformed","object":"chat.completion.chunk",\n\n'
_ANTHROPIC_MALFORMED = b'event: content_block_delta\ndata: {"type":"content_block_delta",\n\n'

Builder = Callable[[Call], Reply]


@dataclass(slots=True)
class Stats:
    """Counters served at ``GET /_sim/stats``."""

    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_client_disconnected: int = 0
    streams_aborted: int = 0  # dropped on purpose by the midstream fault
    active_streams: int = 0


class Simulator:
    """State and handlers of one simulator instance (see ``create_app``)."""

    def __init__(
        self,
        *,
        latency_ms: int = 0,
        event_delay_ms: int = 0,
        fault: Fault | str | None = None,
        max_recorded: int = MAX_RECORDED,
        fault_mix: FaultMix | str | None = None,
    ) -> None:
        self.latency_ms = latency_ms
        self.event_delay_ms = event_delay_ms
        self.fault: Fault | None = parse_fault(fault) if isinstance(fault, str) else fault
        #: Random faults for requests without a fault header (``--fault-mix``).
        self.fault_mix: FaultMix = (
            parse_fault_mix(fault_mix) if isinstance(fault_mix, str) else fault_mix or ()
        )
        self.stats = Stats()
        self.memory = PrefixMemory()
        self.recorded: deque[tuple[float, str, str, str, Any, bytes]] = deque(maxlen=max_recorded)

    # ------------------------------------------------------------------ app

    def create_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app[SIMULATOR_KEY] = self
        r = app.router
        r.add_post("/v1/chat/completions", self._chat)
        r.add_post("/v1/responses", self._responses)
        r.add_post("/v1/embeddings", self._embeddings)
        r.add_post("/v1/messages", self._messages)
        r.add_post("/v1/messages/count_tokens", self._count_tokens)
        r.add_get("/v1/models", self._models)
        r.add_get("/v1/models/{model_id}", self._model)
        for add_routes in WIRE_ROUTES:
            add_routes(self, r)
        r.add_get("/_sim/requests", self._sim_requests)
        r.add_delete("/_sim/requests", self._sim_clear_requests)
        r.add_get("/_sim/stats", self._sim_stats)
        r.add_post("/_sim/reset", self._sim_reset)
        r.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def reset(self) -> None:
        """Zero the counters (``active_streams`` stays live) and forget cached prefixes."""
        stats = self.stats
        stats.requests = stats.streams_started = stats.streams_completed = 0
        stats.streams_client_disconnected = stats.streams_aborted = 0
        self.memory.clear()

    # ------------------------------------------------------------------ endpoints

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "openai", openai_wire.chat_completions)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "openai", openai_wire.responses)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "openai", openai_wire.embeddings)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "anthropic", anthropic_wire.messages)

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "anthropic", anthropic_wire.count_tokens)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        anthropic = "anthropic-version" in request.headers
        return await self.serve(
            request,
            "anthropic" if anthropic else "openai",
            lambda _call: openai_wire.models_list(anthropic),
            parse_json=False,
        )

    async def _model(self, request: web.Request) -> web.StreamResponse:
        anthropic = "anthropic-version" in request.headers
        model_id = request.match_info["model_id"]
        return await self.serve(
            request,
            "anthropic" if anthropic else "openai",
            lambda _call: openai_wire.model_get(model_id, anthropic),
            parse_json=False,
        )

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if "anthropic-version" in request.headers:
            reply = error_reply("anthropic", 404, "Not Found", "not_found_error")
        else:
            reply = error_reply("openai", 404, f"Invalid URL ({request.method} {request.path})")
        return _json_response(reply)

    # ------------------------------------------------------------------ introspection

    async def _sim_requests(self, request: web.Request) -> web.Response:
        out = [
            {
                "time": ts,
                "method": method,
                "path": path,
                "query_string": query,
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in raw_headers],
                "body": base64.b64encode(body).decode(),
            }
            for ts, method, path, query, raw_headers, body in self.recorded
        ]
        return web.Response(body=orjson.dumps(out), content_type=JSON_CT)

    async def _sim_clear_requests(self, request: web.Request) -> web.Response:
        self.recorded.clear()
        return web.Response(body=b'{"cleared":true}', content_type=JSON_CT)

    async def _sim_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(asdict(self.stats)), content_type=JSON_CT)

    async def _sim_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=orjson.dumps(asdict(self.stats)), content_type=JSON_CT)

    # ------------------------------------------------------------------ the common path

    async def _record(self, request: web.Request) -> bytes:
        body = await request.read()
        self.stats.requests += 1
        self.recorded.append(
            (
                time.time(),
                request.method,
                request.path,
                request.query_string,
                request.raw_headers,
                body,
            )
        )
        return body

    async def serve(
        self, request: web.Request, flavor: Flavor, build: Builder, *, parse_json: bool = True
    ) -> web.StreamResponse:
        """Record ``request``, apply latency and faults, and answer with ``build(call)``.

        Wire modules (``WIRE_ROUTES``) call this from their handlers; ``flavor`` picks the
        provider's native error shapes (``errors.register_flavor``).
        """
        body = await self._record(request)
        headers = request.headers
        try:
            spec = headers.get(H_FAULT)
            fault = parse_fault(spec) if spec else self.fault
            if not spec and self.fault_mix:
                fault = pick_fault(self.fault_mix, random.random()) or fault
            latency = _header_int(headers, H_LATENCY)
            latency_ms = self.latency_ms if latency is None else latency
            event_delay = _header_int(headers, H_EVENT_DELAY)
            event_delay_ms = self.event_delay_ms if event_delay is None else event_delay
            output_words = _header_int(headers, H_OUTPUT_WORDS)
        except ValueError as exc:
            return _json_response(error_reply(flavor, 400, f"tollway-simulator: {exc}"))

        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if fault is not None:
            kind = fault.kind
            if kind == "status":
                return _json_response(status_fault_reply(flavor, fault.value, fault.retry_after))
            if kind == "html":
                return _json_response(html_fault_reply())
            if kind == "timeout":
                # Never answer: wait until the client goes away (the handler is cancelled then).
                await asyncio.Event().wait()
            if kind == "reset":
                _drop_connection(request, reset=True)
                return web.Response(status=500)
            if kind == "slow-first-byte":
                await asyncio.sleep(fault.value / 1000)

        replay = headers.get(H_REPLAY)
        reply: Reply
        if replay is not None:
            reply = _replay_reply(flavor, replay)
        else:
            data: Any = {}
            if parse_json:
                try:
                    data = orjson.loads(body)
                except orjson.JSONDecodeError:
                    data = None
                if not isinstance(data, dict):
                    return _json_response(_unparsable(flavor))
            call = Call(
                body=body,
                data=data,
                headers=headers,
                memory=self.memory,
                output_words=output_words,
                tool_override=headers.get(H_TOOL),
            )
            reply = build(call)

        if isinstance(reply, JsonReply):
            return await self._write_json(request, reply, fault)
        return await self._write_stream(request, reply, fault, event_delay_ms)

    async def _write_json(
        self, request: web.Request, reply: JsonReply, fault: Fault | None
    ) -> web.StreamResponse:
        body = reply.body
        if fault is not None and fault.kind == "midstream":
            reply.headers["Content-Type"] = reply.content_type
            reply.headers["x-simulator-fault"] = str(fault)
            resp = web.StreamResponse(status=reply.status, headers=reply.headers)
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            _drop_connection(request, reset=False)
            return resp
        if fault is not None and fault.kind == "malformed-sse" and reply.status == 200:
            reply.headers["x-simulator-fault"] = str(fault)
            reply = JsonReply(reply.status, body[: len(body) // 2], reply.headers)
        return _json_response(reply)

    async def _write_stream(
        self, request: web.Request, reply: StreamReply, fault: Fault | None, event_delay_ms: int
    ) -> web.StreamResponse:
        headers = reply.headers
        headers["Content-Type"] = reply.content_type
        headers["Cache-Control"] = "no-cache"
        events = reply.events
        limit: int | None = None
        if fault is not None:
            if fault.kind == "malformed-sse":
                mid = len(events) // 2
                events = [*events[:mid], reply.malformed, *events[mid:]]
                headers["x-simulator-fault"] = str(fault)
            elif fault.kind == "midstream":
                limit = fault.value
                headers["x-simulator-fault"] = str(fault)
        delay = event_delay_ms / 1000
        stats = self.stats
        resp = web.StreamResponse(status=200, headers=headers)
        stats.streams_started += 1
        stats.active_streams += 1
        try:
            await resp.prepare(request)
            for i, event in enumerate(events):
                if limit is not None and i >= limit:
                    break
                if delay and i:
                    await asyncio.sleep(delay)
                await resp.write(event)
            if limit is not None:
                _drop_connection(request, reset=False)
                stats.streams_aborted += 1
                return resp
            await resp.write_eof()
            stats.streams_completed += 1
        except asyncio.CancelledError:
            stats.streams_client_disconnected += 1
            raise
        except ConnectionError:
            stats.streams_client_disconnected += 1
        finally:
            stats.active_streams -= 1
        return resp


SIMULATOR_KEY = web.AppKey("tollway_simulator", Simulator)

#: Each provider wire beyond OpenAI and Anthropic adds its routes here (before the catch-all).
WIRE_ROUTES: tuple[Callable[[Simulator, web.UrlDispatcher], None], ...] = (
    azure_wire.add_routes,
    gemini_wire.add_routes,
    bedrock_wire.add_routes,
    vertex_wire.add_routes,
)


# --------------------------------------------------------------------------- helpers


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a non-negative integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {raw!r}")
    return value


def _json_response(reply: JsonReply) -> web.Response:
    reply.headers["Content-Type"] = reply.content_type
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


def _unparsable(flavor: Flavor) -> JsonReply:
    if flavor not in ("openai", "anthropic"):
        return error_reply(flavor, 400, "Invalid JSON payload received.")
    if flavor == "anthropic":
        return error_reply("anthropic", 400, "There was an error parsing the body of your request.")
    return error_reply(
        "openai",
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON.)",
    )


def _replay_reply(flavor: Flavor, name: str) -> Reply:
    try:
        events = fixture_events(name)
    except KeyError:
        return error_reply(
            flavor,
            400,
            f"tollway-simulator: unknown fixture {name!r} in {H_REPLAY}; "
            f"bundled: {', '.join(fixture_names())}",
        )
    anthropic = name.startswith("anthropic-")
    return StreamReply(
        list(events),
        provider_headers("anthropic" if anthropic else "openai"),
        _ANTHROPIC_MALFORMED if anthropic else _OPENAI_MALFORMED,
    )


def _drop_connection(request: web.Request, *, reset: bool) -> None:
    """Close the connection under the request: FIN after flushing, or an immediate RST."""
    transport = request.transport
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError, TypeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


def create_app(
    *,
    latency_ms: int = 0,
    event_delay_ms: int = 0,
    fault: Fault | str | None = None,
    fault_mix: FaultMix | str | None = None,
) -> web.Application:
    """A simulator ``web.Application``; its state is ``app[SIMULATOR_KEY]``.

    Run it with ``handler_cancellation=True`` (as ``start_simulator`` does) so that a client
    disconnect is seen at once, also while the ``timeout`` fault holds a request.
    """
    return Simulator(
        latency_ms=latency_ms, event_delay_ms=event_delay_ms, fault=fault, fault_mix=fault_mix
    ).create_app()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    latency_ms: int = 0,
    fault: Fault | str | None = None,
    *,
    event_delay_ms: int = 0,
    fault_mix: FaultMix | str | None = None,
) -> tuple[web.AppRunner, str]:
    """Start a simulator in the running event loop; return ``(runner, base_url)``.

    ``port=0`` picks a free port (``base_url`` names the real one). Stop it with
    ``await runner.cleanup()``; its state is ``runner.app[SIMULATOR_KEY]``.
    """
    app = create_app(
        latency_ms=latency_ms, event_delay_ms=event_delay_ms, fault=fault, fault_mix=fault_mix
    )
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    actual_port = runner.addresses[0][1]
    return runner, f"http://{_url_host(host)}:{actual_port}"
