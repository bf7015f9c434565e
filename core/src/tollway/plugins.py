"""The plugin machinery, for tools and tests that load plugins the way the gateway does.

* :data:`PROJECT_NAME` is the pluggy project name (``tollway``): ``hookimpl``/``hookspec`` mark
  functions with ``tollway_impl``/``tollway_spec`` options, and a ``pluggy.PluginManager`` for
  Tollway hooks is ``pluggy.PluginManager(PROJECT_NAME)``;
* :data:`ENTRY_POINT_GROUP` is the entry-point group installed plugins and providers declare;
* :func:`build_plugin_manager` builds a fresh plugin manager exactly as the gateway does (the
  selection applied, failures reported per plugin by name as :class:`PluginLoadError`);
* :func:`provider_classes` asks the plugins of a manager for their provider adapter classes;
* :class:`Hooks` is the core's async-aware caller over a plugin manager, with one method per
  request and lifecycle hook (``await Hooks(pm).account(ctx)`` calls ``account`` as the gateway
  would, awaiting ``async def`` implementations and isolating failures per the hook's call
  mode). Building one checks the rules the core enforces at start-up (an ``async def``
  ``on_stream_chunk`` is refused).

A plugin never needs these to *be* a plugin (``from tollway import hookimpl`` is enough); they
are for the conformance kit, a plugin's own tests, and programs that host the gateway.
"""

from __future__ import annotations

from tollway._hooks import Hooks
from tollway._markers import PROJECT_NAME, hookimpl, hookspec
from tollway._plugins import (
    ENTRY_POINT_GROUP,
    PluginInfo,
    PluginLoadError,
    build_plugin_manager,
    provider_classes,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "Hooks",
    "PluginInfo",
    "PluginLoadError",
    "build_plugin_manager",
    "hookimpl",
    "hookspec",
    "provider_classes",
]
