"""The public core modules plugins import instead of ``tollway._*``: every name in their
``__all__`` exists, has a docstring where it is a function or class, and is the very object of
the private implementation (old private import paths keep working)."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC = {
    "tollway.sse": "tollway._sse",
    "tollway.logs": "tollway._logging",
    "tollway.plugins": None,
    "tollway.server": "tollway._server",
    "tollway.ledger": None,
    "tollway.routing": None,
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_module(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    assert module.__all__, f"{name} has no __all__"
    private = importlib.import_module(PUBLIC[name]) if PUBLIC[name] else None
    for attr in module.__all__:
        value = getattr(module, attr)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert inspect.getdoc(value), f"{name}.{attr} has no docstring"
        if private is not None:
            assert getattr(private, attr) is value, f"{name}.{attr} is not {PUBLIC[name]}.{attr}"


def test_plugins_names_are_the_cores() -> None:
    from tollway import _hooks, _markers, _plugins, hookimpl, plugins

    assert plugins.Hooks is _hooks.Hooks
    assert plugins.PROJECT_NAME == _markers.PROJECT_NAME == "tollway"
    assert plugins.hookimpl is hookimpl
    assert plugins.ENTRY_POINT_GROUP == _plugins.ENTRY_POINT_GROUP == "tollway"
    assert plugins.build_plugin_manager is _plugins.build_plugin_manager
