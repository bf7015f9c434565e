"""The async-aware hook caller and its typed facade.

pluggy has no async support: a ``firstresult`` call with an ``async def`` implementation returns
the un-awaited coroutine. The core therefore walks each hook's implementations itself, in
pluggy's call order (re-sorted by phase for hooks that declare phases), awaiting what needs
awaiting. How each hook is called (first / each / isolated, sync only, phases) is read from its
specification's ``@calls(...)`` declaration in :mod:`tollway.hookspecs`, never restated here.
The implementation lists are computed once at start-up (plugins cannot change while the gateway
serves), so a call costs a list walk.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from tollway._context import RequestContext
from tollway._markers import PHASE_ATTR, CallSpec, call_spec
from tollway._plugins import PluginLoadError
from tollway._types import Credential, Principal, RouteTarget, Verdict

if TYPE_CHECKING:
    from tollway.gateway import Gateway, ResponseView
    from tollway.provider import ProviderResult
    from tollway.state import StateLocation

__all__ = ["Hooks", "Impl"]

log = logging.getLogger("tollway.hooks")


@attrs.frozen
class Impl:
    plugin: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    is_async: bool
    #: The phase it runs in, for hooks that declare phases ("" otherwise).
    phase: str = ""


def spec_of(pm: pluggy.PluginManager, hook: str) -> CallSpec:
    """The call mode hook ``hook``'s specification declares."""
    caller = getattr(pm.hook, hook)
    assert caller.spec is not None, hook
    return call_spec(caller.spec.function)


def _spec_names(pm: pluggy.PluginManager) -> list[str]:
    from tollway import hookspecs

    return [
        name
        for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, "tollway_spec") and hasattr(pm.hook, name)
    ]


def _impls(pm: pluggy.PluginManager, hook: str) -> tuple[Impl, ...]:
    """``hook``'s implementations in call order, checked against its declared call mode."""
    caller = getattr(pm.hook, hook)
    spec = spec_of(pm, hook)
    out = []
    # pluggy calls implementations from the end of get_hookimpls() backwards.
    for impl in reversed(caller.get_hookimpls()):
        plugin = pm.get_name(impl.plugin) or repr(impl.plugin)
        is_async = inspect.iscoroutinefunction(impl.function)
        if is_async and spec.sync_only:
            raise PluginLoadError(
                f"plugin {plugin!r}: {hook} must be synchronous (a plain def); "
                + (
                    "it runs per SSE event, so hand slow work to a task"
                    if hook == "on_stream_chunk"
                    else "the core calls it without awaiting"
                )
            )
        phase = getattr(impl.function, PHASE_ATTR, None)
        if phase is not None and phase not in spec.phases:
            known = ", ".join(spec.phases) if spec.phases else "none: it declares no phases"
            raise PluginLoadError(
                f"plugin {plugin!r}: hook {hook}() has no phase {phase!r} (its phases: {known})"
            )
        if spec.phases and phase is None:
            if impl.tryfirst:
                phase = spec.phases[0]
            elif impl.trylast:
                phase = spec.phases[-1]
            else:
                phase = spec.default_phase
        out.append(
            Impl(
                plugin=plugin,
                function=impl.function,
                argnames=tuple(impl.argnames),
                is_async=is_async,
                phase=phase or "",
            )
        )
    if spec.phases:
        # Stable: within one phase, pluggy's order stays.
        out.sort(key=lambda i: spec.phases.index(i.phase))
    return tuple(out)


def _start(impl: Impl, kwargs: dict[str, Any]) -> Any:
    """Call ``impl`` with the arguments it names: its result, or what to await for it.

    Callers await in their own frame (``if _pending(...)``) rather than through a coroutine of
    this module's: every hook call would otherwise create one more coroutine, and every resume
    of the plugin's code would pass through it."""
    return impl.function(*[kwargs[name] for name in impl.argnames])


def _pending(impl: Impl, result: Any) -> bool:
    """Whether ``result`` still has to be awaited (an ``async def``, or a plain function that
    returned an awaitable)."""
    return impl.is_async or (result is not None and inspect.isawaitable(result))


async def _first(impls: Sequence[Impl], kwargs: dict[str, Any]) -> tuple[str, Any] | None:
    """Mode ``first``: the first non-None result and the plugin that gave it."""
    for impl in impls:
        result = _start(impl, kwargs)
        if _pending(impl, result):
            result = await result
        if result is not None:
            return impl.plugin, result
    return None


async def _each(impls: Sequence[Impl], kwargs: dict[str, Any]) -> None:
    """Mode ``each``: every implementation in order; the first to raise stops the call."""
    for impl in impls:
        if impl.is_async:
            await impl.function(*[kwargs[n] for n in impl.argnames])
        else:
            impl.function(*[kwargs[n] for n in impl.argnames])


async def _isolated(
    impls: Sequence[Impl], kwargs: dict[str, Any], hook: str, request_id: str
) -> None:
    """Mode ``isolated``: every implementation; an exception is logged per plugin."""
    for impl in impls:
        try:
            result = _start(impl, kwargs)
            if _pending(impl, result):
                await result
        except Exception:
            log.exception(
                "hook_failed hook=%s plugin=%s request_id=%s", hook, impl.plugin, request_id
            )


class Hooks:
    """One typed method per per-request hook; core code never calls ``pm.hook.x`` directly."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        #: Every hook called through this facade, with its declared call mode.
        self.specs: dict[str, CallSpec] = {}
        self.impls: dict[str, tuple[Impl, ...]] = {}
        for name in _spec_names(pm):
            # Every hook, so a plugin breaking a declared rule (an async impl of a sync-only
            # hook, an unknown phase) is refused at start-up with its name.
            self.specs[name] = spec_of(pm, name)
            self.impls[name] = _impls(pm, name)
        for name, mode in _CALLED.items():
            declared = self.specs[name].mode
            if declared != mode:  # a spec edited without its caller: fail loudly at start-up
                raise AssertionError(f"{name} is declared {declared!r} but called {mode!r}")
        self._authenticate = self.impls["authenticate"]
        self._admit = self.impls["admit"]
        self._pre_guardrail = self.impls["pre_guardrail"]
        self._answer = self.impls["answer"]
        self._route = self.impls["route"]
        self._filter_models = self.impls["filter_models"]
        self._before_attempt = self.impls["before_attempt"]
        self._post_guardrail = self.impls["post_guardrail"]
        self._account = self.impls["account"]
        self._started = self.impls["gateway_started"]
        self._stopping = self.impls["gateway_stopping"]
        #: Sync ``on_stream_chunk`` implementations; empty → the core never dispatches per chunk.
        self.stream_chunk: tuple[Callable[[RequestContext, bytearray], Verdict | None], ...] = (
            tuple(_bind_chunk(i) for i in self.impls["on_stream_chunk"])
        )

    @property
    def answers(self) -> bool:
        """Whether any plugin implements ``answer`` (else the core skips the step)."""
        return bool(self._answer)

    # --- request hooks -------------------------------------------------------------------

    async def authenticate(self, ctx: RequestContext, credential: Credential) -> Principal | None:
        found = await _first(self._authenticate, {"ctx": ctx, "credential": credential})
        return None if found is None else found[1]

    # The per-request methods below return the walk's coroutine rather than awaiting it in one
    # of their own: one coroutine less per hook call, and per resume of the plugin's code.

    def admit(self, ctx: RequestContext) -> Coroutine[Any, Any, None]:
        return _each(self._admit, {"ctx": ctx})

    def pre_guardrail(self, ctx: RequestContext) -> Coroutine[Any, Any, list[tuple[str, Verdict]]]:
        return self._verdicts(self._pre_guardrail, {"ctx": ctx})

    def post_guardrail(
        self, ctx: RequestContext, response: ResponseView
    ) -> Coroutine[Any, Any, list[tuple[str, Verdict]]]:
        return self._verdicts(self._post_guardrail, {"ctx": ctx, "response": response})

    async def _verdicts(
        self, impls: Sequence[Impl], kwargs: dict[str, Any]
    ) -> list[tuple[str, Verdict]]:
        out: list[tuple[str, Verdict]] = []
        for impl in impls:
            verdict = _start(impl, kwargs)
            if _pending(impl, verdict):
                verdict = await verdict
            if verdict is None:
                continue
            if not isinstance(verdict, Verdict):
                raise TypeError(f"plugin {impl.plugin!r} returned {verdict!r}, not a Verdict")
            out.append((impl.plugin, verdict))
            if verdict.decision == "block":
                break
        return out

    async def answer(self, ctx: RequestContext) -> tuple[str, ProviderResult] | None:
        """The first plugin's answer, with the plugin's name."""
        from tollway.provider import ProviderResult

        found = await _first(self._answer, {"ctx": ctx})
        if found is not None and not isinstance(found[1], ProviderResult):
            raise TypeError(f"plugin {found[0]!r} answered {found[1]!r}, not a ProviderResult")
        return found

    async def route(self, ctx: RequestContext) -> list[RouteTarget] | None:
        found = await _first(self._route, {"ctx": ctx})
        return None if found is None else list(found[1])

    async def before_attempt(self, ctx: RequestContext, target: RouteTarget) -> None:
        if self._before_attempt:
            await _each(self._before_attempt, {"ctx": ctx, "target": target})

    async def filter_models(self, ctx: RequestContext, models: list[str]) -> None:
        await _each(self._filter_models, {"ctx": ctx, "models": models})

    def account(self, ctx: RequestContext) -> Coroutine[Any, Any, None]:
        return _isolated(self._account, {"ctx": ctx}, "account", ctx.request_id)

    # --- lifecycle -------------------------------------------------------------------------

    async def gateway_started(self, gateway: Gateway) -> None:
        for impl in self._started:
            try:
                result = _start(impl, {"gateway": gateway})
                if _pending(impl, result):
                    await result
            except PluginLoadError:
                raise
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {impl.plugin!r} failed to start: {type(exc).__name__}: {exc}"
                ) from exc

    async def gateway_stopping(self, gateway: Gateway) -> None:
        await _isolated(self._stopping, {"gateway": gateway}, "gateway_stopping", "-")

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

#: The hooks this facade calls and the mode its method implements, checked against each
#: specification's declaration when the facade is built.
_CALLED: dict[str, str] = {
    "authenticate": "first",
    "admit": "each",
    "pre_guardrail": "each",
    "answer": "first",
    "route": "first",
    "before_attempt": "each",
    "filter_models": "each",
    "post_guardrail": "each",
    "on_stream_chunk": "each",
    "account": "isolated",
    "gateway_started": "each",
    "gateway_stopping": "isolated",
}
