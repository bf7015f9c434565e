"""The hook-plugin suite: packaging, hook signatures, isolation, settings, and a real gateway.

Subclass it in your plugin's tests::

    class TestMyPlugin(HookPluginSuite):
        entry_point = "tollway-my-plugin"  # = your distribution name

See docs/testing-plugins.md for each check and its failure messages.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pluggy
import pytest

from tollway import RequestContext, hookimpl, hookspecs
from tollway.config import ConfigError, PluginSelection, Settings, structure_plugin_settings
from tollway.plugins import ENTRY_POINT_GROUP, PROJECT_NAME, Hooks, build_plugin_manager
from tollway_conformance.blocking import blocking_calls
from tollway_conformance.harness import STATIC_KEYS, Simulator, start_gateway, stop
from tollway_conformance.provider import registered_providers
from tollway_conformance.serve import PER_REQUEST_HOOKS

__all__ = ["HookPluginSuite"]

_MARKER = f"{PROJECT_NAME}_impl"
_UNKNOWN_KEY = "conformance_unknown_key"


class _Failing(RuntimeError):
    """What the failing sibling plugins raise."""


class _FailFirst:
    @hookimpl(tryfirst=True)
    def account(self, ctx: RequestContext) -> None:
        raise _Failing("conformance: a sibling plugin's account failed (tryfirst)")


class _FailPlain:
    @hookimpl
    async def account(self, ctx: RequestContext) -> None:
        raise _Failing("conformance: a sibling plugin's account failed")


class _FailLast:
    @hookimpl(trylast=True)
    def account(self, ctx: RequestContext) -> None:
        raise _Failing("conformance: a sibling plugin's account failed (trylast)")


def _spec_names() -> set[str]:
    return {
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, f"{PROJECT_NAME}_spec")
    }


class HookPluginSuite:
    """Subclass with ``entry_point = "<your distribution name>"``."""

    entry_point: ClassVar[str] = ""
    #: Other plugins (entry-point names) your plugin needs in the gateway check, e.g.
    #: ``("tollway-guardrails",)`` for an evaluator plugin.
    companions: ClassVar[tuple[str, ...]] = ()
    #: Extra TOML for the gateway check (your ``[plugin.<name>]`` section, …).
    gateway_config: ClassVar[str] = ""
    #: Extra environment for the gateway check.
    gateway_env: ClassVar[dict[str, str]] = {}
    #: The static key's config in the gateway check (SPEC §3), e.g. ``{"guardrails": …}``.
    key_config: ClassVar[dict[str, Any] | None] = None

    # --- helpers ---------------------------------------------------------------------------

    def _entry_point(self) -> importlib.metadata.EntryPoint:
        assert self.entry_point, "set `entry_point` to your plugin's entry-point name"
        eps = [
            ep
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.name == self.entry_point
        ]
        assert eps, (
            f"no entry point named {self.entry_point!r} in group {ENTRY_POINT_GROUP!r}: add "
            f'[project.entry-points.tollway] {self.entry_point} = "your_module" to '
            "pyproject.toml and reinstall the package (pip install -e .)"
        )
        return eps[0]

    def _plugin(self) -> Any:
        return self._entry_point().load()

    def _impls(self) -> list[tuple[str, Any]]:
        """(hook name, implementation function) of the plugin, for every hook it implements."""
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        plugin = self._plugin()
        pm.register(plugin, name=self.entry_point)
        out = []
        for caller in pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    out.append((caller.name, impl.function))
        return out

    # --- packaging -------------------------------------------------------------------------

    def test_entry_point_loads(self) -> None:
        """The entry point is declared in the ``tollway`` group and imports."""
        self._entry_point().load()

    def test_entry_point_name_is_distribution_name(self) -> None:
        """``tollway plugins``, ``TOLLWAY_PLUGINS`` and ``TOLLWAY_DISABLE_PLUGINS`` use one name."""
        ep = self._entry_point()
        dist = ep.dist.name if ep.dist else None
        normalized = (dist or "").replace("_", "-").lower()
        assert normalized == ep.name.lower(), (
            f"entry point {ep.name!r} should be named after its distribution {dist!r}, so "
            "`tollway plugins` and TOLLWAY_DISABLE_PLUGINS use one name: rename it to "
            f"{normalized!r} in [project.entry-points.tollway]"
        )

    def test_declares_conformance(self) -> None:
        """The distribution lists ``tollway-conformance`` among its requirements (a ``test``
        extra), which ``tollway plugins`` shows in its CONFORMANCE column."""
        ep = self._entry_point()
        reqs = (ep.dist.requires if ep.dist else None) or []
        if not any(r.replace("_", "-").lower().startswith("tollway-conformance") for r in reqs):
            pytest.skip(
                f"{ep.dist.name if ep.dist else ep.name} does not declare tollway-conformance: "
                'add [project.optional-dependencies] test = ["tollway-conformance"] to its '
                "pyproject.toml so `tollway plugins` shows CONFORMANCE declared"
            )

    # --- hook signatures -------------------------------------------------------------------

    def test_hooks_match_specs(self) -> None:
        """Every hook implementation names a Tollway hook and has no defaulted parameter."""
        plugin = self._plugin()
        specs = _spec_names()
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        try:
            pm.register(plugin, name=self.entry_point)
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise AssertionError(
                f"{exc}. Hook implementations must be named after a Tollway hook "
                f"({', '.join(sorted(specs))}) and take a subset of its parameters"
            ) from None
        assert pm.get_hookcallers(plugin), (
            f"{self.entry_point} implements no hook: mark functions with @tollway.hookimpl"
        )
        for caller in pm.get_hookcallers(plugin) or ():
            assert caller.name in specs, f"{caller.name} is not a Tollway hook"
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                sig = inspect.signature(impl.function)
                defaulted = [p for p in sig.parameters.values() if p.default is not p.empty]
                assert not defaulted, (
                    f"{caller.name}(): parameters {[p.name for p in defaulted]} have default "
                    "values; pluggy never passes them, so the hook would always see the "
                    f"default — remove the defaults: def {caller.name}("
                    + ", ".join(p.name for p in sig.parameters.values())
                    + ")"
                )
                assert not (impl.hookwrapper or impl.wrapper), (
                    f"{caller.name}(): hookwrapper/wrapper implementations are not supported; "
                    "the core calls per-request hooks itself. Use a plain @hookimpl"
                )

    def test_loads_alone_with_builtins(self) -> None:
        """The core's plugin loader accepts the plugin (signature and sync-only checks)."""
        pm, infos = build_plugin_manager(PluginSelection(allow=[self.entry_point]))
        assert self.entry_point in [i.name for i in infos]
        Hooks(pm)  # raises on an async on_stream_chunk

    def test_sync_hooks_do_not_block(self) -> None:
        """Synchronous per-request hooks call no known blocking function (a static look at
        their source and the functions they call in the same package)."""
        plugin = self._plugin()
        package = getattr(plugin, "__name__", None) or type(plugin).__module__
        findings = []
        for hook, fn in self._impls():
            if hook not in PER_REQUEST_HOOKS or inspect.iscoroutinefunction(inspect.unwrap(fn)):
                continue
            findings += blocking_calls(hook, fn, package)
        assert not findings, (
            "synchronous per-request hooks run on the event loop, where a blocking call "
            "stalls every request in flight:\n  "
            + "\n  ".join(str(f) for f in findings)
            + "\nMake the hook `async def` and use an async library (aiohttp, redis.asyncio, "
            "asyncio.sleep), or do the work once in gateway_started"
        )

    # --- isolation -------------------------------------------------------------------------

    def test_account_survives_failing_sibling(self, caplog: pytest.LogCaptureFixture) -> None:
        """The plugin's ``account`` still runs when other plugins' ``account`` raise (before
        and after it)."""
        plugin = self._plugin()
        original = getattr(plugin, "account", None)
        if original is None or not hasattr(original, _MARKER):
            pytest.skip("the plugin does not implement account")
        calls: list[Any] = []
        if inspect.iscoroutinefunction(inspect.unwrap(original)):

            @functools.wraps(original)
            async def spy(*args: Any) -> Any:
                calls.append(args[0] if args else None)
                return await original(*args)

        else:

            @functools.wraps(original)
            def spy(*args: Any) -> Any:
                calls.append(args[0] if args else None)
                return original(*args)

        proxy = type("AccountSpy", (), {"account": staticmethod(spy)})()
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        pm.register(proxy, name=self.entry_point)
        for i, sibling in enumerate((_FailFirst(), _FailPlain(), _FailLast())):
            pm.register(sibling, name=f"conformance-failing-sibling-{i}")
        ctx = RequestContext(
            request_id="grq_conformance",
            endpoint="chat",
            method="POST",
            path="/v1/chat/completions",
            query_string=b"",
            headers={},
            trace_id="0" * 32,
            span_id="0" * 16,
            status=401,
            error_type="invalid_api_key",
        )
        with caplog.at_level(logging.CRITICAL, logger="tollway.hooks"):
            asyncio.run(Hooks(pm).account(ctx))
        assert calls, (
            f"{self.entry_point}'s account() did not run when sibling plugins' account() "
            "raised; account is called in isolation — do not rely on other plugins' account, "
            "and do not implement it as a hookwrapper"
        )

    # --- settings --------------------------------------------------------------------------

    def test_settings_round_trip(self) -> None:
        """Settings sections structure from ``{}`` to defaults, refuse unknown keys, and
        survive ``tollway config show`` (unstructure, structure again)."""
        from tollway.config import converter

        registered: dict[str, type[Any]] = {}
        plugin = self._plugin()
        register_settings = getattr(plugin, "register_settings", None)
        if register_settings is None or not hasattr(register_settings, _MARKER):
            pytest.skip("the plugin registers no settings")
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        pm.register(plugin, name=self.entry_point)
        pm.hook.register_settings(register=lambda name, cls: registered.setdefault(name, cls))
        assert registered, "register_settings() registered nothing: call register(name, cls)"
        for name, cls in registered.items():
            section = f"[plugin.{name}]"
            assert attrs.has(cls), (
                f"{section} is registered with {cls!r}, which is not an attrs class; register "
                "an @attrs.frozen class whose fields all have defaults"
            )
            try:
                settings = structure_plugin_settings(
                    Settings(plugin_sections={name: {}}), {name: cls}
                )
            except ConfigError as exc:
                raise AssertionError(
                    f"an empty or absent {section} must give the defaults, but: {exc}. Give "
                    f"every field of {cls.__qualname__} a default"
                ) from None
            defaults = settings.plugin(name)
            try:
                structure_plugin_settings(
                    Settings(plugin_sections={name: {_UNKNOWN_KEY: 1}}), {name: cls}
                )
            except ConfigError as exc:
                assert _UNKNOWN_KEY in str(exc), (
                    f"{section} refused an unknown key without naming it: {exc}"
                )
            else:
                raise AssertionError(
                    f"{section} accepted the unknown key {_UNKNOWN_KEY!r}; a misspelled "
                    "setting must stop start-up. Do not register a custom structure hook that "
                    "ignores extra keys"
                )
            data = converter.unstructure(defaults)
            again = structure_plugin_settings(
                Settings(plugin_sections={name: data}), {name: cls}
            ).plugin(name)
            assert again == defaults, (
                f"{section} does not survive unstructure → structure (what `tollway config "
                f"show` prints cannot be read back): {defaults!r} became {again!r}"
            )

    # --- a real gateway --------------------------------------------------------------------

    def works_alone_call(self, gateway: Any, model: str, fmt: str) -> None:
        """The one call of the gateway check; override for a more telling call (it must
        succeed). ``fmt`` is ``"chat"`` (openai SDK) or ``"messages"`` (anthropic SDK)."""
        if fmt == "chat":
            reply = gateway.openai().chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "hello from the conformance suite"}],
            )
            assert reply.choices[0].message.content
        else:
            reply = gateway.anthropic().messages.create(
                model=model,
                max_tokens=64,
                messages=[{"role": "user", "content": "hello from the conformance suite"}],
            )
            assert reply.content

    def test_works_alone_with_builtins(self, tollway_simulator: Simulator, tmp_path: Path) -> None:
        """A real gateway starts with only a provider adapter, tollway-static-keys and this
        plugin (``TOLLWAY_PLUGINS``), serves one SDK call, runs ``account``, and the plugin's
        sync hooks make no blocking call meanwhile (audited at run time)."""
        names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
        if STATIC_KEYS not in names:
            pytest.skip("install tollway-static-keys to run the gateway check")
        adapters: dict[str, str] = {}
        for name in sorted(names):
            try:
                kinds = registered_providers(name)
            except Exception:
                continue
            for kind in kinds:
                adapters.setdefault(kind, name)
        if "openai" in adapters:
            kind, fmt, model, path = "openai", "chat", "gpt-4o-mini", "/v1"
        elif "anthropic" in adapters:
            kind, fmt, model, path = "anthropic", "messages", "claude-haiku-4-5", ""
        else:
            pytest.skip(
                "install tollway-provider-openai or tollway-provider-anthropic to run the "
                "gateway check"
            )
        plugins = [adapters[kind], STATIC_KEYS, *self.companions, self.entry_point]
        plugins = list(dict.fromkeys(plugins))
        config = (
            f'[[providers]]\nname = "sim"\ntype = "{kind}"\n'
            f'base_url = "{tollway_simulator.url}{path}"\napi_key = "sk-conformance"\n'
            + self.gateway_config
        )
        gw = start_gateway(
            tmp_path / "gw",
            config,
            env=dict(self.gateway_env),
            plugins=plugins,
            key_config=self.key_config,
            audit_plugin=self.entry_point,
        )
        try:
            self.works_alone_call(gw, model, fmt)
            # The call's account ran (the probe records it after every account impl).
            deadline = time.monotonic() + 5
            while not any(r["kind"] == "request" for r in gw.records()):
                assert time.monotonic() < deadline, (
                    f"account was not called within 5 s of the call:\n{gw.logs()[-2000:]}"
                )
                time.sleep(0.02)
            blocking = [r for r in gw.records() if r["kind"] == "blocking"]
            failed = []
            for line in gw.logs().splitlines():
                if "hook_failed" not in line or self.entry_point not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    failed.append(line)
                    continue
                exc = str(entry.get("exc") or "").strip().splitlines()
                failed.append(f"{entry.get('msg')}: {exc[-1] if exc else '?'}")
        finally:
            stop(gw.proc)
        assert not failed, (
            f"{self.entry_point}'s hooks raised during one plain request (see the gateway log "
            "for the tracebacks):\n  "
            + "\n  ".join(failed)
            + "\nEvery hook must cope with every request; `account` also sees failed ones "
            "(ctx.principal or ctx.usage None)"
        )
        assert not blocking, (
            f"{self.entry_point}'s synchronous per-request hooks made blocking calls on the "
            "event loop during one request:\n  "
            + "\n  ".join(
                f"{r['hook']}(): {r['event']} {r['detail']} (at {r['where']})" for r in blocking
            )
            + "\nMake the hook `async def` and use an async library, or do the work once in "
            "gateway_started"
        )
