"""What the gateway answers: replies, their headers, the stream relay and settling."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs
import orjson
from quart import Response
from werkzeug.datastructures import Headers

from tollway import __version__
from tollway._context import RequestContext
from tollway._errors import (
    _NO_RETRY_STATUSES,
    GatewayError,
    GuardrailBlocked,
    UpstreamError,
    UpstreamHTTPError,
)
from tollway._input import (
    header_value,
)
from tollway._logging import handler_task_var, request_id_var
from tollway._sse import error_event
from tollway._types import Verdict
from tollway.provider import ProviderResult

if TYPE_CHECKING:
    from tollway._hooks import Hooks
    from tollway.routing import LiveStats

__all__ = ["CIHeaders", "Replies", "Reply", "ResponseView", "to_quart"]

log = logging.getLogger("tollway.gateway")


#: Printable ASCII kept as is in a header value; anything else is percent-encoded.
_HEADER_SAFE = " !#$&'()*+,/:;=?@[]~"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@attrs.define
class ResponseView:
    """A complete non-streaming response as ``post_guardrail`` sees it."""

    status: int
    body: bytes
    _json: Any = None
    modified: bool = False

    @property
    def json(self) -> Any:
        if self._json is None:
            self._json = orjson.loads(self.body)
        return self._json

    def set_json(self, value: Any) -> None:
        """Replace the response body (the client receives the re-serialisation)."""
        self._json = value
        self.body = orjson.dumps(value)
        self.modified = True


@attrs.define(slots=True)
class Reply:
    """What the gateway answers, independent of the server framework."""

    ctx: RequestContext
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: For streams: chunks of SSE events; the gateway settles the request when it ends.
    stream: AsyncIterator[bytes] | None = None


class CIHeaders(dict[str, str]):
    """Request headers keyed by lower-case name; lookups ignore case."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


_LOGGED_BODY_BYTES = 64 * 1024


def _log_body(direction: str, body: bytes) -> None:
    """One ``message_body`` line (the request id comes from the log context)."""
    shown = body[:_LOGGED_BODY_BYTES].decode("utf-8", "replace")
    log.info(
        "message_body direction=%s bytes=%d%s body=%s",
        direction,
        len(body),
        " truncated=true" if len(body) > _LOGGED_BODY_BYTES else "",
        shown,
    )


def _merge(upstream: list[tuple[str, str]], ours: dict[str, str]) -> list[tuple[str, str]]:
    """Upstream headers, minus those we set, then ours."""
    mine = {k.lower() for k in ours}
    out = [(k, v) for k, v in upstream if k.lower() not in mine]
    out.extend(ours.items())
    return out


def to_quart(reply: Reply) -> Response:
    """A :class:`Reply` as a Quart response."""
    body: Any = reply.stream if reply.stream is not None else reply.body
    response = Response(body, status=reply.status, headers=Headers(reply.headers))
    if reply.stream is not None:
        response.timeout = None
    return response


class _StreamState:
    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = False


def _blocked(ctx: RequestContext, verdict: Verdict) -> bytes:
    """The terminal frame of a stream a guardrail blocked."""
    ctx.terminated_at_chunk = ctx.stream_chunks
    ctx.error_type = "guardrail_blocked"
    return error_event(
        verdict.reason or "blocked by a stream guardrail",
        code="stream_chunk_blocked",
        type_="guardrail_blocked",
    )


async def _feed(ctx: RequestContext, filters: list[Any], chunk: bytes) -> bytes | Verdict:
    """``chunk`` through the request's stream filters, in order."""
    for f in list(filters):
        try:
            out = await f.feed(ctx, chunk)
        except Exception as exc:
            out = await _failed(ctx, filters, f, exc, chunk)
        if isinstance(out, Verdict):
            ctx.verdicts.append(("stream_chunk", "", out))
            if out.decision == "block":
                return out
            continue
        chunk = out
        if not chunk:
            return b""
    return chunk


async def _end(ctx: RequestContext, filters: list[Any]) -> bytes | Verdict:
    """What every filter held back, each flushed through the filters after it."""
    out = b""
    for f in list(filters):
        try:
            if out:
                fed = await f.feed(ctx, out)
                if isinstance(fed, Verdict) and fed.decision == "block":
                    return fed
                out = fed if isinstance(fed, bytes) else out
            tail = await f.end(ctx)
        except Exception as exc:
            out = await _failed(ctx, filters, f, exc, out)
            continue
        if isinstance(tail, Verdict):
            if tail.decision == "block":
                return tail
            continue
        out += tail
    return out


async def _failed(
    ctx: RequestContext, filters: list[Any], f: Any, exc: Exception, chunk: bytes
) -> bytes:
    """A filter raised: it fails open (SPEC §6) — the chunk passes, the filter is dropped, and
    what it held back is recovered when it can be."""
    log.warning("guardrail_fail_open direction=stream_chunk filter=%r error=%r", f, exc)
    if f in filters:
        filters.remove(f)
    try:
        held = await f.end(ctx)
    except Exception:
        held = b""
    return (held if isinstance(held, bytes) else b"") + chunk


class Replies:
    """The gateway's replies: headers, a complete body (``post_guardrail``), a relayed stream
    (``on_stream_chunk`` and per-request listeners), errors, and settling (``finish``)."""

    # Set by the Gateway.
    hooks: Hooks
    in_flight: int
    streaming_active: int
    log_bodies: bool
    live: LiveStats
    response_owners: Any

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        raise NotImplementedError  # the Gateway's

    def base_headers(self, ctx: RequestContext) -> dict[str, str]:
        rid = ctx.request_id
        return {
            "X-LangWatch-Request-Id": rid,
            "X-Request-Id": rid,
            "X-LangWatch-Gateway-Request-Id": rid,
            "X-LangWatch-Trace-Id": ctx.trace_id,
            "X-LangWatch-Span-Id": ctx.span_id,
            "X-LangWatch-Gateway-Version": __version__,
        }

    def routed_headers(self, ctx: RequestContext) -> dict[str, str]:
        out = {"X-LangWatch-Fallback-Count": str(ctx.fallback_count)}
        if ctx.provider_type:
            out["X-LangWatch-Provider"] = ctx.provider_type
        if ctx.provider:
            # Which credential of that type (two OpenAI accounts look alike in the header above).
            out["X-LangWatch-Provider-Name"] = quote(ctx.provider, safe=_HEADER_SAFE)
        if ctx.resolved_model:
            out["X-LangWatch-Model"] = header_value(ctx.resolved_model)
        return out

    def finish(self, ctx: RequestContext) -> None:
        """The client's response is complete: settle the request (``account``) off-path."""
        self.in_flight -= 1
        if ctx.in_flight_to is not None:
            self.live.ended(ctx.in_flight_to)
            ctx.in_flight_to = None
        ctx.finished = time.perf_counter()
        if ctx.stored_response_id is not None:
            self.response_owners.remember(ctx)
        # The task copies the current context: make its log lines carry this request's id.
        token = request_id_var.set(ctx.request_id)
        try:
            self.spawn(self.hooks.account(ctx))
        finally:
            request_id_var.reset(token)

    async def _body_reply(self, ctx: RequestContext, result: ProviderResult) -> Reply:
        body = result.body or b""
        if self.hooks._post_guardrail:
            view = ResponseView(result.status, body)
            for plugin, verdict in await self.hooks.post_guardrail(ctx, view):
                ctx.verdicts.append(("post", plugin, verdict))
                if verdict.decision == "block":
                    raise GuardrailBlocked(
                        verdict.reason or f"blocked by guardrail {verdict.evaluator or plugin}"
                    )
            body = view.body
        if self.log_bodies:
            _log_body("response", body)
        headers = self.base_headers(ctx)
        headers.update(self.routed_headers(ctx))
        headers.update(ctx.response_headers)
        ctx.status = result.status
        if ctx.stored_response_id is not None:
            # Before the client has the id, so it can be retrieved at once.
            self.response_owners.remember(ctx)
        return Reply(ctx, result.status, _merge(result.headers, headers), body)

    def _stream_reply(self, ctx: RequestContext, result: ProviderResult) -> Reply:
        assert result.events is not None
        headers = self.base_headers(ctx)
        headers.update(self.routed_headers(ctx))
        headers.update(ctx.response_headers)
        headers.update(_SSE_HEADERS)
        if not any(k.lower() == "content-type" for k, _ in result.headers):
            # An adapter whose upstream does not stream SSE (JSON lines) need not set it.
            headers["content-type"] = "text/event-stream; charset=utf-8"
        ctx.status = result.status
        state = _StreamState()
        body = self._relay(ctx, result, state)
        # If the client leaves before the body starts, the generator never runs its `finally`:
        # settle when it is dropped instead (CPython frees it at once).
        weakref.finalize(body, self._abandoned, ctx, result, state)
        return Reply(ctx, result.status, _merge(result.headers, headers), stream=body)

    def _abandoned(self, ctx: RequestContext, result: ProviderResult, state: _StreamState) -> None:
        if state.started:
            return
        ctx.client_disconnected = True
        if result.close is not None:
            result.close()
        self.finish(ctx)

    async def _relay(
        self, ctx: RequestContext, result: ProviderResult, state: _StreamState
    ) -> AsyncIterator[bytes]:
        assert result.events is not None
        state.started = True
        listeners = self.hooks.stream_chunk
        if ctx.stream_listeners:
            listeners = (*listeners, *ctx.stream_listeners)
        filters = ctx.stream_filters
        events = result.events
        token = request_id_var.set(ctx.request_id)
        task_token = handler_task_var.set(asyncio.current_task())
        self.streaming_active += 1
        try:
            try:
                async for chunk in events:
                    ctx.stream_chunks += chunk.count(b"\n\n") or 1
                    if ctx.first_byte_at is None:
                        ctx.first_byte_at = time.perf_counter()
                    if listeners:
                        buf = bytearray(chunk)
                        for listener in listeners:
                            try:
                                verdict = listener(ctx, buf)
                            except Exception as exc:
                                # Stream guardrails fail open by contract (SPEC §6).
                                log.warning(
                                    "guardrail_fail_open direction=stream_chunk error=%r", exc
                                )
                                continue
                            if verdict is not None:
                                ctx.verdicts.append(("stream_chunk", "", verdict))
                            if verdict is not None and verdict.decision == "block":
                                yield _blocked(ctx, verdict)
                                return
                        chunk = bytes(buf)
                    if filters:
                        out = await _feed(ctx, filters, chunk)
                        if isinstance(out, Verdict):
                            yield _blocked(ctx, out)
                            return
                        chunk = out
                        if not chunk:
                            continue
                    yield chunk
            except UpstreamError as exc:
                if filters:
                    # What the filters held back was judged: the client gets it before the error.
                    held = await _end(ctx, filters)
                    if isinstance(held, Verdict):
                        yield _blocked(ctx, held)
                        return
                    if held:
                        yield held
                ctx.terminated_at_chunk = ctx.stream_chunks
                ctx.error_type = "provider_error"
                ctx.error_message = exc.message
                log.warning(
                    "upstream_mid_stream_failure provider=%s chunks=%d error=%s",
                    ctx.provider,
                    ctx.stream_chunks,
                    exc.message,
                )
                yield error_event(
                    f"the upstream provider failed mid-stream after {ctx.stream_chunks} "
                    f"event(s): {exc.message}"
                )
                return
            if filters:
                held = await _end(ctx, filters)
                if isinstance(held, Verdict):
                    yield _blocked(ctx, held)
                    return
                if held:
                    yield held
        except (asyncio.CancelledError, GeneratorExit):
            ctx.client_disconnected = True
            raise
        finally:
            self.streaming_active -= 1
            if result.close is not None:
                result.close()
            self.finish(ctx)
            request_id_var.reset(token)
            handler_task_var.reset(task_token)

    def error_reply(self, ctx: RequestContext, exc: GatewayError) -> Reply:
        ctx.status = exc.status
        ctx.error_type = exc.type
        ctx.error_message = exc.message
        # Recorded on the context too, so `account` sees e.g. the rate-limit dimension.
        ctx.response_headers.update(exc.headers())
        headers = self.base_headers(ctx)
        if ctx.attempts:
            headers.update(self.routed_headers(ctx))
        headers.update(ctx.response_headers)
        headers.update(exc.headers())
        if exc.status >= 500:
            log.warning("request_failed status=%d type=%s %s", exc.status, exc.type, exc.message)
        headers["content-type"] = "application/json"
        return Reply(
            ctx, exc.status, list(headers.items()), exc.envelope(anthropic=ctx.is_anthropic_client)
        )

    def error_response(self, ctx: RequestContext, exc: GatewayError) -> Response:
        """An error as a Quart response (for routes served by Quart)."""
        return to_quart(self.error_reply(ctx, exc))

    def _passthrough_reply(self, ctx: RequestContext, err: UpstreamHTTPError) -> Reply:
        ctx.status = err.status
        ctx.error_type = "upstream_error"
        headers = self.base_headers(ctx)
        headers.update(self.routed_headers(ctx))
        headers.update(ctx.response_headers)
        if err.status in _NO_RETRY_STATUSES and not any(
            k.lower() == "x-should-retry" for k, _ in err.headers
        ):
            # A provider's refusal is no more retryable through us than ours (SPEC §2).
            headers["x-should-retry"] = "false"
        return Reply(ctx, err.status, _merge(err.headers, headers), err.body)
