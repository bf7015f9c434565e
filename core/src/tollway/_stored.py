"""``/v1/responses/{id}``: retrieve, delete, cancel and list the input items of a stored
response, at the provider that created it.

Which provider holds a response is recorded before the Responses call that stored it ends
(:attr:`RequestContext.stored_response_id`): in Redis when ``GATEWAY_REDIS_URL`` is set (every
replica sees it, for 30 days, OpenAI's retention), else in this process (the most recent
100 000). The record also keeps the model and the project that created it: only keys of that
project reach it, and the key must still be allowed that model. A response the gateway made by
translation (``resp_tw_…``, a provider without the Responses API) was never stored: a 404 says
so.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import attrs
from quart import Response, request

from tollway._context import STORED_RESPONSES, RequestContext
from tollway._dispatch import _PassThrough
from tollway._errors import GatewayError
from tollway._logging import handler_task_var, request_id_var
from tollway._reply import Replies, to_quart
from tollway._types import Principal, RouteTarget
from tollway.formats import TRANSLATED_RESPONSE_PREFIX

if TYPE_CHECKING:
    from tollway._dispatch import Dispatch
    from tollway.provider import Provider, ProviderResult

__all__ = ["ResponseOwners", "StoredResponses"]

log = logging.getLogger("tollway.gateway")

_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
_LOCAL_LIMIT = 100_000
_TTL_SECONDS = 30 * 24 * 3600
_REDIS_PREFIX = "tollway:response-owner:"
_REDIS_DEADLINE = 0.5


@attrs.frozen
class Owner:
    """Where a stored response lives and who made it."""

    provider: str
    model: str
    project: str

    def encode(self) -> str:
        return f"{self.provider}\t{self.model}\t{self.project}"

    @classmethod
    def decode(cls, raw: str) -> Owner | None:
        parts = raw.split("\t")
        return cls(*parts) if len(parts) == 3 else None


def _project(principal: Principal | None) -> str:
    if principal is None:
        return ""
    return f"{principal.organization_id}/{principal.project_id or ''}"


class ResponseOwners:
    """Response id → :class:`Owner`: this process's recent ones, and Redis when configured."""

    def __init__(self) -> None:
        self.local: OrderedDict[str, Owner] = OrderedDict()
        self.redis: Any = None
        self._facility: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, gateway: Any) -> None:
        if not gateway.settings.redis_url:
            return
        from tollway.redis import shared

        self._facility = shared(gateway, "stored-responses", max_connections=4)
        if self._facility is not None:
            self.redis = self._facility.client

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        if self._facility is not None:
            await self._facility.release("stored-responses")

    def remember(self, ctx: RequestContext) -> None:
        """Record the response ``ctx`` stored: before a complete answer is sent, when a
        stream ends (before its last byte)."""
        response_id = ctx.stored_response_id
        ctx.stored_response_id = None  # once
        attempt = next((a for a in reversed(ctx.attempts) if a.outcome == "ok"), None)
        if response_id is None or attempt is None:
            return
        owner = Owner(attempt.provider, attempt.model, _project(ctx.principal))
        local = self.local
        local[response_id] = owner
        if len(local) > _LOCAL_LIMIT:
            local.popitem(last=False)
        if self.redis is not None:
            task = asyncio.ensure_future(self._store(response_id, owner))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _store(self, response_id: str, owner: Owner) -> None:
        try:
            async with asyncio.timeout(_REDIS_DEADLINE):
                await self.redis.set(_REDIS_PREFIX + response_id, owner.encode(), ex=_TTL_SECONDS)
        except Exception as exc:  # the local record still serves this replica
            log.warning("response_owner_store_failed id=%s error=%r", response_id, exc)

    async def lookup(self, response_id: str) -> Owner | None:
        owner = self.local.get(response_id)
        if owner is not None or self.redis is None:
            return owner
        try:
            async with asyncio.timeout(_REDIS_DEADLINE):
                raw = await self.redis.get(_REDIS_PREFIX + response_id)
        except Exception as exc:
            log.warning("response_owner_lookup_failed id=%s error=%r", response_id, exc)
            raise _OwnerUnavailable(
                "the gateway cannot reach Redis to find which provider holds this response; "
                "retry shortly",
                retry_after=1,
            ) from None
        if raw is None:
            return None
        return Owner.decode(raw.decode() if isinstance(raw, bytes) else str(raw))


class _NotFound(GatewayError):
    type = "not_found"
    status = 404


class _OwnerUnavailable(GatewayError):
    type = "service_unavailable"
    status = 503


class StoredResponses(Replies):
    """The gateway's ``/v1/responses/{id}`` routes (mixed into the Gateway)."""

    response_owners: ResponseOwners

    def chain(
        self, principal: Principal | None, endpoint: str | None = None
    ) -> list[tuple[Provider, str | None]]:
        raise NotImplementedError  # the Gateway's

    async def stored_response(self, response_id: str) -> Response:
        gw: Any = self
        ctx: RequestContext = gw.new_context(
            STORED_RESPONSES, request.method, request.path, request.query_string, request.headers
        )
        token = request_id_var.set(ctx.request_id)
        task_token = handler_task_var.set(asyncio.current_task())
        self.in_flight += 1
        streaming = False
        try:
            await gw.authenticate(ctx)
            result = await self._stored_result(ctx, response_id)
            if result.events is not None:
                streaming = True
                return to_quart(self._stream_reply(ctx, result))
            return to_quart(await self._body_reply(ctx, result))
        except GatewayError as exc:
            return self.error_response(ctx, exc)
        except _PassThrough as exc:
            return to_quart(self._passthrough_reply(ctx, exc.error))
        finally:
            if not streaming:
                self.finish(ctx)
            request_id_var.reset(token)
            handler_task_var.reset(task_token)

    async def _stored_result(self, ctx: RequestContext, response_id: str) -> ProviderResult:
        if _ID.fullmatch(response_id) is None:
            raise _NotFound(
                "no stored response has that id; a response id looks like resp_… (letters, "
                "digits, _ and -)",
                code="response_not_found",
            )
        if response_id.startswith(TRANSLATED_RESPONSE_PREFIX):
            raise _NotFound(
                f"response {response_id} was not stored: its model's provider has no Responses "
                "API, so the gateway answered it by translation to chat completions, which "
                "keep nothing; keep the output items you need and send them again in 'input'",
                code="response_not_found",
            )
        owner = await self.response_owners.lookup(response_id)
        if owner is None or owner.project != _project(ctx.principal):
            raise _NotFound(
                f"response {response_id} was not created through this gateway by this key's "
                "project (or its record expired); retrieve it with the key that created it",
                code="response_not_found",
            )
        provider = next(
            (
                p
                for p, _ in self.chain(ctx.principal, STORED_RESPONSES)
                if p.key == owner.provider and STORED_RESPONSES in p.endpoints
            ),
            None,
        )
        if provider is None:
            raise _NotFound(
                f"response {response_id} is held by a provider this key no longer reaches; "
                "ask the operator to attach it again",
                code="response_not_found",
            )
        ctx.model = owner.model
        await self.hooks.admit(ctx)
        ctx.targets = [RouteTarget(provider.key, owner.model)]
        dispatch: Dispatch = self  # type: ignore[assignment]
        return await dispatch.dispatch(ctx)
