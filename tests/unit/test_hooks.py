"""The plugin manager and the async-aware hook caller, against real pluggy."""

from __future__ import annotations

import asyncio

import pytest

from tollway import InvalidAPIKey, Principal, RequestContext, StashKey, Verdict, hookimpl
from tollway._hooks import Hooks
from tollway._plugins import PluginLoadError, build_plugin_manager
from tollway._types import Credential
from tollway.config import PluginSelection


def ctx() -> RequestContext:
    return RequestContext(
        request_id="grq_x",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 31 + "1",
        span_id="0" * 15 + "1",
    )


def make(*plugins: object) -> Hooks:
    pm, _ = build_plugin_manager(
        PluginSelection(),
        extra=[(f"p{i}", p) for i, p in enumerate(plugins)],
        load_installed=False,
    )
    return Hooks(pm)


class SyncAuth:
    def __init__(self, answer: Principal | None) -> None:
        self.answer = answer
        self.calls = 0

    @hookimpl
    def authenticate(self, credential: Credential) -> Principal | None:
        self.calls += 1
        return self.answer


class AsyncAuth(SyncAuth):
    @hookimpl
    async def authenticate(self, credential: Credential) -> Principal | None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.calls += 1
        return self.answer


P = Principal(key_id="k", display_prefix="lw_vk_live_01ABCDE")


def test_first_result_awaits_async_impls_and_stops() -> None:
    later = SyncAuth(Principal(key_id="other", display_prefix="x"))
    first = AsyncAuth(P)  # registered last → called first (LIFO)
    hooks = make(later, first)
    got = asyncio.run(hooks.authenticate(ctx(), Credential("s", "authorization")))
    assert got is P  # the awaited value, not a coroutine
    assert first.calls == 1 and later.calls == 0


def test_none_defers_to_next_plugin() -> None:
    nobody, somebody = AsyncAuth(None), SyncAuth(P)
    hooks = make(somebody, nobody)
    assert asyncio.run(hooks.authenticate(ctx(), Credential("s", "x-api-key"))) is P
    assert nobody.calls == 1


def test_tryfirst_and_trylast_order_admission() -> None:
    order: list[str] = []

    class Late:
        @hookimpl(trylast=True)
        async def admit(self, ctx: RequestContext) -> None:
            order.append("budget")

    class Early:
        @hookimpl(tryfirst=True)
        def admit(self, ctx: RequestContext) -> None:
            order.append("ratelimit")

    class Middle:
        @hookimpl
        def admit(self, ctx: RequestContext) -> None:
            order.append("policy")

    asyncio.run(make(Early(), Late(), Middle()).admit(ctx()))
    assert order == ["ratelimit", "policy", "budget"]


def test_raise_in_each_mode_stops_the_chain() -> None:
    ran: list[str] = []

    class Refuse:
        @hookimpl(tryfirst=True)
        def admit(self, ctx: RequestContext) -> None:
            raise InvalidAPIKey("no")

    class After:
        @hookimpl
        def admit(self, ctx: RequestContext) -> None:
            ran.append("after")

    with pytest.raises(InvalidAPIKey):
        asyncio.run(make(Refuse(), After()).admit(ctx()))
    assert ran == []


def test_account_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    class Broken:
        @hookimpl(tryfirst=True)
        async def account(self, ctx: RequestContext) -> None:
            raise RuntimeError("ledger down")

    class Fine:
        @hookimpl
        def account(self, ctx: RequestContext) -> None:
            seen.append(ctx.request_id)

    asyncio.run(make(Fine(), Broken()).account(ctx()))
    assert seen == ["grq_x"]
    assert "plugin=p1" in caplog.text and "hook=account" in caplog.text


def test_guardrail_stops_at_first_block() -> None:
    class Block:
        @hookimpl(tryfirst=True)
        def pre_guardrail(self, ctx: RequestContext) -> Verdict:
            return Verdict("block", "pii found")

    class Never:
        @hookimpl
        def pre_guardrail(self, ctx: RequestContext) -> Verdict:
            raise AssertionError("must not run after a block")

    verdicts = asyncio.run(make(Block(), Never()).pre_guardrail(ctx()))
    assert [v.decision for _, v in verdicts] == ["block"]


def test_defaulted_hook_parameter_is_refused() -> None:
    class Bad:
        @hookimpl
        def authenticate(self, ctx: RequestContext, credential: Credential = None):  # type: ignore[assignment]
            return None

    with pytest.raises(PluginLoadError, match="default value"):
        make(Bad())


def test_misspelled_hook_is_refused() -> None:
    class Typo:
        @hookimpl
        def authenticat(self, ctx: RequestContext) -> None:
            pass

    with pytest.raises(PluginLoadError, match="authenticat"):
        make(Typo())


def test_async_stream_chunk_hook_is_refused() -> None:
    class Slow:
        @hookimpl
        async def on_stream_chunk(self, ctx: RequestContext, chunk: bytearray) -> None:
            pass

    with pytest.raises(PluginLoadError, match="synchronous"):
        make(Slow())


def test_no_stream_listeners_means_no_dispatch() -> None:
    assert make(SyncAuth(None)).stream_chunk == ()

    class Upper:
        @hookimpl
        def on_stream_chunk(self, chunk: bytearray, ctx: RequestContext) -> None:
            chunk[:] = bytes(chunk).upper()

    (listener,) = make(Upper()).stream_chunk
    buf = bytearray(b"data: x\n\n")
    listener(ctx(), buf)
    assert buf == b"DATA: X\n\n"


def test_stash_is_typed_and_private() -> None:
    a: StashKey[int] = StashKey("a")
    b: StashKey[int] = StashKey("a")  # same name, different key
    c = ctx()
    c.stash[a] = 1
    assert c.stash[a] == 1 and b not in c.stash and c.stash.get(b, 7) == 7


# --- declared call modes and admission phases ----------------------------------------------------


def test_every_docstring_states_the_declared_call_mode() -> None:
    """The caller reads ``@calls(...)``; the docs read the docstring: they must agree."""
    import re

    from tollway import hookspecs
    from tollway._markers import call_spec

    found = 0
    for name, fn in vars(hookspecs).items():
        if not hasattr(fn, "tollway_spec"):
            continue
        found += 1
        spec = call_spec(fn)
        match = re.search(
            r"^\s*Call mode: \*\*(\w+)\*\*, (may be ``async def``|synchronous)",
            fn.__doc__ or "",
            re.M,
        )
        assert match, name
        assert match[1] == spec.mode, f"{name}: docstring says {match[1]}, spec {spec.mode}"
        assert (match[2] == "synchronous") == spec.sync_only, name
    assert found > 15


def _admit_order(*plugins: tuple[str, object]) -> list[str]:
    order: list[str] = []
    pm, _ = build_plugin_manager(PluginSelection(), extra=list(plugins), load_installed=False)
    hooks = Hooks(pm)
    for impl in hooks._admit:
        order.append(impl.plugin)
    return order


def _phased(phase: str | None, **marks: bool) -> object:
    class Plugin:
        @hookimpl(phase=phase, **marks)
        def admit(self, ctx: RequestContext) -> None:
            pass

    return Plugin()


@pytest.mark.parametrize("names", [("a", "b", "c", "d", "e"), ("e", "d", "c", "b", "a")])
def test_admission_order_is_the_documented_phases_whatever_the_names(
    names: tuple[str, ...],
) -> None:
    """limits → policy → model → request → budget, as hookspecs.admit documents, whichever
    order the plugins are registered in and whatever they are called."""
    from tollway.hookspecs import ADMIT_PHASES

    plugins = {
        "budget": _phased(None, trylast=True),  # unphased trylast → last phase
        "request": _phased(None),  # unphased, unmarked → default phase
        "model": _phased("model"),
        "policy": _phased("policy"),
        "limits": _phased(None, tryfirst=True),  # unphased tryfirst → first phase
    }
    for order in (list(plugins), list(reversed(plugins))):
        named = [(f"{n}-{phase}", plugins[phase]) for n, phase in zip(names, order, strict=True)]
        got = [name.split("-", 1)[1] for name in _admit_order(*named)]
        assert got == list(ADMIT_PHASES)


def test_installed_plugins_admit_in_the_documented_order() -> None:
    pm, _ = build_plugin_manager(PluginSelection())
    hooks = Hooks(pm)
    got = [(i.plugin, i.phase) for i in hooks._admit]
    want = [
        ("tollway-rate-limits", "limits"),
        ("tollway-policy-rules", "policy"),
        ("tollway-model-access", "model"),
        ("tollway-cache-passthrough", "request"),
        ("tollway-budgets", "budget"),
    ]
    assert [g for g in got if g in want] == [w for w in want if w in got]


def test_unknown_phase_is_refused_with_the_plugin_name() -> None:
    with pytest.raises(PluginLoadError, match=r"'bad'.*no phase 'later'"):
        _admit_order(("bad", _phased("later")))

    class Route:
        @hookimpl(phase="model")
        def route(self, ctx: RequestContext) -> None:
            return None

    with pytest.raises(PluginLoadError, match="declares no phases"):
        make(Route())


def test_async_impl_of_a_sync_only_hook_is_refused() -> None:
    class Reg:
        @hookimpl
        async def register_settings(self, register: object) -> None:
            pass

    with pytest.raises(PluginLoadError, match="register_settings must be synchronous"):
        make(Reg())


# --- answer ---------------------------------------------------------------------------------------


def test_answer_first_wins_and_names_the_plugin() -> None:
    from tollway.provider import ProviderResult

    result = ProviderResult(200, [], body=b"{}")

    class Never:
        @hookimpl
        def answer(self, ctx: RequestContext) -> ProviderResult:
            raise AssertionError("must not run after an answer")

    class Pass:
        @hookimpl(tryfirst=True)
        def answer(self, ctx: RequestContext) -> None:
            return None

    class Answers:
        @hookimpl
        async def answer(self, ctx: RequestContext) -> ProviderResult:
            return result

    hooks = make(Never(), Answers(), Pass())
    assert hooks.answers
    assert asyncio.run(hooks.answer(ctx())) == ("p1", result)
    assert not make().answers


def test_answer_that_is_not_a_provider_result_is_a_plugin_bug() -> None:
    class Bad:
        @hookimpl
        def answer(self, ctx: RequestContext) -> object:
            return {"status": 200}

    with pytest.raises(TypeError, match="'p0' answered"):
        asyncio.run(make(Bad()).answer(ctx()))


def test_adapter_classes_without_a_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tollway.provider.adapter_problems`` finds the installed adapters from the entry points
    alone: the same classes a gateway's plugin manager registers."""
    import pluggy

    from tollway._plugins import installed_provider_classes, provider_classes

    pm, _ = build_plugin_manager(PluginSelection())
    want = provider_classes(pm)

    def no_manager(*args: object, **kwargs: object) -> None:
        raise AssertionError("built a plugin manager")

    monkeypatch.setattr(pluggy, "PluginManager", no_manager)
    assert installed_provider_classes() == want
