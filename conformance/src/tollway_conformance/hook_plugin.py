"""The hook-plugin suite: packaging and hook-signature checks every plugin must pass."""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import ClassVar

import pluggy

from tollway import hookspecs
from tollway._hooks import Hooks
from tollway._plugins import ENTRY_POINT_GROUP, build_plugin_manager
from tollway.config import PluginSelection


class HookPluginSuite:
    """Subclass with ``entry_point = "<your distribution name>"``."""

    entry_point: ClassVar[str] = ""

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
            "pyproject.toml and reinstall the package"
        )
        return eps[0]

    def test_entry_point_loads(self) -> None:
        self._entry_point().load()

    def test_entry_point_name_is_distribution_name(self) -> None:
        ep = self._entry_point()
        dist = ep.dist.name if ep.dist else None
        normalized = (dist or "").replace("_", "-").lower()
        assert normalized == ep.name.lower(), (
            f"entry point {ep.name!r} should be named after its distribution {dist!r}, so "
            "`tollway plugins` and TOLLWAY_DISABLE_PLUGINS use one name"
        )

    def test_hooks_match_specs(self) -> None:
        plugin = self._entry_point().load()
        specs = {
            name
            for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "tollway_spec")
        }
        pm = pluggy.PluginManager("tollway")
        pm.add_hookspecs(hookspecs)
        pm.register(plugin, name=self.entry_point)
        pm.check_pending()  # a misspelled hook name fails here
        for caller in pm.get_hookcallers(plugin) or ():
            assert caller.name in specs
            for impl in caller.get_hookimpls():
                sig = inspect.signature(impl.function)
                defaulted = [p for p in sig.parameters.values() if p.default is not p.empty]
                assert not defaulted, (
                    f"{caller.name}(): parameters {[p.name for p in defaulted]} have default "
                    "values; pluggy never passes them — remove the defaults"
                )

    def test_loads_alone_with_builtins(self) -> None:
        pm, infos = build_plugin_manager(PluginSelection(allow=[self.entry_point]))
        assert self.entry_point in [i.name for i in infos]
        Hooks(pm)  # raises on an async on_stream_chunk
