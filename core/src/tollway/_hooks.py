"""The async-aware hook caller and its typed facade.

pluggy has no async support: a ``firstresult`` call with an ``async def`` implementation returns
the un-awaited coroutine. The core therefore walks each hook's implementations itself, in
pluggy's call order, awaiting what needs awaiting. The implementation lists are computed once at
start-up (plugins cannot change while the gateway serves), so a call costs a list walk.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from tollway._context import RequestContext
from tollway._plugins import PluginLoadError
from tollway._types import Credential, Principal, RouteTarget, Verdict

if TYPE_CHECKING:
    from tollway.gateway import Gateway, ResponseView
    from tollway.state import StateLocation

__all__ = ["Hooks", "Impl"]

log = logging.getLogger("tollway.hooks")


@attrs.frozen
class Impl:
    plugin: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    is_async: bool


def _impls(pm: pluggy.PluginManager, hook: str) -> tuple[Impl, ...]:
    caller = getattr(pm.hook, hook)
    out = []
    # pluggy calls implementations from the end of get_hookimpls() backwards.
    for impl in reversed(caller.get_hookimpls()):
        out.append(
            Impl(
                plugin=pm.get_name(impl.plugin) or repr(impl.plugin),
                function=impl.function,
                argnames=tuple(impl.argnames),
                is_async=inspect.iscoroutinefunction(impl.function),
            )
        )
    return tuple(out)


async def _call(impl: Impl, kwargs: dict[str, Any]) -> Any:
    result = impl.function(*[kwargs[name] for name in impl.argnames])
    if inspect.isawaitable(result):
        result = await result
    return result


class Hooks:
    """One typed method per per-request hook; core code never calls ``pm.hook.x`` directly."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._authenticate = _impls(pm, "authenticate")
        self._admit = _impls(pm, "admit")
        self._pre_guardrail = _impls(pm, "pre_guardrail")
        self._route = _impls(pm, "route")
        self._filter_models = _impls(pm, "filter_models")
        self._before_attempt = _impls(pm, "before_attempt")
        self._post_guardrail = _impls(pm, "post_guardrail")
        self._account = _impls(pm, "account")
        self._started = _impls(pm, "gateway_started")
        self._stopping = _impls(pm, "gateway_stopping")
        for impl in _impls(pm, "on_stream_chunk"):
            if impl.is_async:
                raise PluginLoadError(
                    f"plugin {impl.plugin!r}: on_stream_chunk must be synchronous (it runs per "
                    "SSE event); make it a plain def and hand slow work to a task"
                )
        #: Sync ``on_stream_chunk`` implementations; empty → the core never dispatches per chunk.
        self.stream_chunk: tuple[Callable[[RequestContext, bytearray], Verdict | None], ...] = (
            tuple(_bind_chunk(i) for i in _impls(pm, "on_stream_chunk"))
        )

    # --- request hooks -------------------------------------------------------------------

    async def authenticate(self, ctx: RequestContext, credential: Credential) -> Principal | None:
        kwargs = {"ctx": ctx, "credential": credential}
        for impl in self._authenticate:
            result = await _call(impl, kwargs)
            if result is not None:
                return result  # type: ignore[no-any-return]
        return None

    async def admit(self, ctx: RequestContext) -> None:
        kwargs = {"ctx": ctx}
        for impl in self._admit:
            if impl.is_async:
                await impl.function(*[kwargs[n] for n in impl.argnames])
            else:
                impl.function(*[kwargs[n] for n in impl.argnames])

    async def pre_guardrail(self, ctx: RequestContext) -> list[tuple[str, Verdict]]:
        return await self._verdicts(self._pre_guardrail, {"ctx": ctx})

    async def post_guardrail(
        self, ctx: RequestContext, response: ResponseView
    ) -> list[tuple[str, Verdict]]:
        return await self._verdicts(self._post_guardrail, {"ctx": ctx, "response": response})

    async def _verdicts(
        self, impls: Sequence[Impl], kwargs: dict[str, Any]
    ) -> list[tuple[str, Verdict]]:
        out: list[tuple[str, Verdict]] = []
        for impl in impls:
            verdict = await _call(impl, kwargs)
            if verdict is None:
                continue
            if not isinstance(verdict, Verdict):
                raise TypeError(f"plugin {impl.plugin!r} returned {verdict!r}, not a Verdict")
            out.append((impl.plugin, verdict))
            if verdict.decision == "block":
                break
        return out

    async def route(self, ctx: RequestContext) -> list[RouteTarget] | None:
        kwargs = {"ctx": ctx}
        for impl in self._route:
            result = await _call(impl, kwargs)
            if result is not None:
                return list(result)
        return None

    async def before_attempt(self, ctx: RequestContext, target: RouteTarget) -> None:
        if not self._before_attempt:
            return
        kwargs = {"ctx": ctx, "target": target}
        for impl in self._before_attempt:
            await _call(impl, kwargs)

    async def filter_models(self, ctx: RequestContext, models: list[str]) -> None:
        kwargs = {"ctx": ctx, "models": models}
        for impl in self._filter_models:
            await _call(impl, kwargs)

    async def account(self, ctx: RequestContext) -> None:
        await self._isolated(self._account, {"ctx": ctx}, "account", ctx.request_id)

    # --- lifecycle -------------------------------------------------------------------------

    async def gateway_started(self, gateway: Gateway) -> None:
        for impl in self._started:
            try:
                await _call(impl, {"gateway": gateway})
            except PluginLoadError:
                raise
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {impl.plugin!r} failed to start: {type(exc).__name__}: {exc}"
                ) from exc

    async def gateway_stopping(self, gateway: Gateway) -> None:
        await self._isolated(self._stopping, {"gateway": gateway}, "gateway_stopping", "-")

    def readiness_checks(self, gateway: Gateway) -> dict[str, Callable[[], Any]]:
        checks: dict[str, Callable[[], Any]] = {}
        for result in self.pm.hook.readiness_checks(gateway=gateway):
            if result:
                checks.update(result)
        return checks

    def describe_state(self, state: StateLocation, gateway: Gateway | None) -> dict[str, Any]:
        """Every plugin's ``describe_state``, merged; a plugin that raises is logged and left
        out (a status report must not fail because of one plugin)."""
        out: dict[str, Any] = {}
        for impl in _impls(self.pm, "describe_state"):
            kwargs = {"state": state, "gateway": gateway}
            try:
                result = impl.function(*[kwargs[n] for n in impl.argnames])
            except Exception:
                log.exception("hook_failed hook=describe_state plugin=%s", impl.plugin)
                continue
            if result:
                out.update(result)
        return out

    @staticmethod
    async def _isolated(
        impls: Sequence[Impl], kwargs: dict[str, Any], hook: str, request_id: str
    ) -> None:
        for impl in impls:
            try:
                await _call(impl, kwargs)
            except Exception:
                log.exception(
                    "hook_failed hook=%s plugin=%s request_id=%s", hook, impl.plugin, request_id
                )


def _bind_chunk(impl: Impl) -> Callable[[RequestContext, bytearray], Verdict | None]:
    fn = impl.function
    names = impl.argnames
    if names == ("ctx", "chunk"):
        return fn
    if names == ("chunk", "ctx"):
        return lambda ctx, chunk: fn(chunk, ctx)

    def call(ctx: RequestContext, chunk: bytearray) -> Verdict | None:
        kw = {"ctx": ctx, "chunk": chunk}
        return fn(*[kw[n] for n in names])  # type: ignore[no-any-return]

    return call


AwaitableOrValue = Awaitable[Any] | Any
