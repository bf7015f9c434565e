"""Building the plugin manager: built-ins, then installed plugins from the ``tollway`` group."""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from tollway import hookspecs
from tollway._markers import PROJECT_NAME
from tollway.config import PluginSelection

if TYPE_CHECKING:
    from tollway.provider import Provider

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginLoadError",
    "build_plugin_manager",
    "installed_provider_classes",
    "provider_classes",
]

log = logging.getLogger("tollway.plugins")

ENTRY_POINT_GROUP = "tollway"


class PluginLoadError(Exception):
    """A plugin could not be loaded; the message names it and says what to do."""


@attrs.frozen
class PluginInfo:
    """One loaded plugin, as ``tollway plugins`` lists it: its entry-point ``name``, its
    distribution and version, the hooks it implements, whether it is one of the core's
    built-ins, and whether its distribution declares a dependency on ``tollway-conformance``
    (it runs the conformance suites)."""

    name: str
    version: str
    distribution: str
    hooks: tuple[str, ...]
    builtin: bool = False
    conformance: bool = False


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def build_plugin_manager(
    selection: PluginSelection,
    builtins: Sequence[tuple[str, object]] = (),
    extra: Sequence[tuple[str, object]] = (),
    *,
    load_installed: bool = True,
    skip_broken: bool = False,
) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """Create a fresh plugin manager (never module-global, so tests don't leak state).

    Every installed entry point of the ``tollway`` group allowed by ``selection`` is registered
    (in name order), then ``builtins`` (the core's own plugins), then ``extra`` (tests). A
    plugin that fails to import stops start-up naming it, unless it is listed in
    ``selection.optional`` (or ``skip_broken``: the CLI still offers the other plugins'
    commands).
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []

    if load_installed:
        seen: dict[str, str] = {}
        for ep in _entry_points():
            dist = ep.dist.name if ep.dist else "?"
            if ep.name in seen:
                raise PluginLoadError(
                    f"plugin {ep.name!r} is provided twice (by {seen[ep.name]} and {dist}); "
                    "uninstall one of them"
                )
            seen[ep.name] = dist
            if selection.allow is not None and ep.name not in selection.allow:
                continue
            if ep.name in selection.disable:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                if skip_broken:
                    continue
                if ep.name in selection.optional:
                    log.warning(
                        "plugin_load_failed plugin=%s error=%s (optional: skipped)", ep.name, exc
                    )
                    continue
                raise PluginLoadError(
                    f"plugin {ep.name!r} (distribution {dist}) failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall it, disable it with "
                    f"TOLLWAY_DISABLE_PLUGINS={ep.name}, or mark it optional with "
                    f"TOLLWAY_OPTIONAL_PLUGINS={ep.name}."
                ) from exc
            _register(pm, ep.name, plugin)
            version = ep.dist.version if ep.dist else "?"
            infos.append(
                PluginInfo(
                    ep.name,
                    version,
                    dist,
                    _hooks_of(pm, plugin),
                    conformance=_declares_conformance(ep),
                )
            )
        if selection.allow is not None:
            missing = sorted(set(selection.allow) - set(seen))
            if missing:
                raise PluginLoadError(
                    f"TOLLWAY_PLUGINS names {', '.join(missing)}, which "
                    f"{'is' if len(missing) == 1 else 'are'} not installed "
                    f"(installed: {', '.join(sorted(seen)) or 'none'})"
                )

    # Built-ins after the installed plugins: the router is `trylast`, and within `trylast`
    # pluggy calls the first registered first, so it stays the last word on routing.
    for name, plugin in builtins:
        _register(pm, name, plugin)
        infos.append(PluginInfo(name, _core_version(), "tollway", _hooks_of(pm, plugin), True))
    for name, plugin in extra:
        _register(pm, name, plugin)
        infos.append(PluginInfo(name, "0", "(test)", _hooks_of(pm, plugin)))
    return pm, infos


def _register(pm: pluggy.PluginManager, name: str, plugin: object) -> None:
    try:
        pm.register(plugin, name=name)
        _check_impls(pm, name, plugin)
        pm.check_pending()
    except PluginLoadError:
        raise
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"plugin {name!r}: {exc}") from exc
    except ValueError as exc:
        raise PluginLoadError(f"plugin {name!r} could not be registered: {exc}") from exc


def _check_impls(pm: pluggy.PluginManager, name: str, plugin: object) -> None:
    for caller in pm.get_hookcallers(plugin) or ():
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            sig = inspect.signature(impl.function)
            defaulted = [
                p.name for p in sig.parameters.values() if p.default is not inspect.Parameter.empty
            ]
            if defaulted:
                pm.unregister(plugin)
                raise PluginLoadError(
                    f"plugin {name!r}: hook {caller.name}() parameter(s) "
                    f"{', '.join(defaulted)} have a default value; pluggy never passes "
                    "defaulted parameters, so the hook would always see the default. "
                    "Remove the default."
                )


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    return tuple(sorted(c.name for c in pm.get_hookcallers(plugin) or ()))


def _declares_conformance(ep: importlib.metadata.EntryPoint) -> bool:
    if ep.dist is None:
        return False
    reqs: Iterable[str] = ep.dist.requires or ()
    return any(r.replace("_", "-").startswith("tollway-conformance") for r in reqs)


def _core_version() -> str:
    from tollway import __version__

    return __version__


def plugin_name(pm: pluggy.PluginManager, plugin: Any) -> str:
    """The registered name of ``plugin`` (never a bare number in messages)."""
    return pm.get_name(plugin) or repr(plugin)


def _provider_registry() -> tuple[dict[str, type[Provider]], Any]:
    classes: dict[str, type[Provider]] = {}

    def register(cls: type[Provider]) -> None:
        if not cls.type:
            raise PluginLoadError(f"provider class {cls.__qualname__} has no `type`")
        if cls.type in classes and classes[cls.type] is not cls:
            raise PluginLoadError(
                f"provider type {cls.type!r} registered twice: "
                f"{classes[cls.type].__module__} and {cls.__module__}"
            )
        classes[cls.type] = cls

    return classes, register


def provider_classes(pm: pluggy.PluginManager) -> dict[str, type[Provider]]:
    """The provider adapter classes the plugins of ``pm`` register, by ``type``."""
    classes, register = _provider_registry()
    pm.hook.register_providers(register=register)
    return classes


def installed_provider_classes() -> dict[str, type[Provider]]:
    """The adapter classes every installed plugin registers, by ``type``, without building a
    plugin manager: each entry point of the ``tollway`` group is loaded (one that fails to
    import is skipped) and its ``register_providers`` implementation, if it has one, called.
    For validating provider configs outside a gateway (the control plane's writes)."""
    classes, register = _provider_registry()
    for ep in _entry_points():
        try:
            plugin = ep.load()
        except Exception:
            continue
        for attr in dir(plugin):
            fn = getattr(plugin, attr, None)
            opts = getattr(fn, f"{PROJECT_NAME}_impl", None)
            if opts is None or not callable(fn):
                continue
            if (opts.get("specname") or attr) == "register_providers":
                fn(register=register)
    return classes
