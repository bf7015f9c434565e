"""Conformance suites for Tollway plugins: subclass them in your plugin's tests."""

from __future__ import annotations

from tollway_conformance.hook_plugin import HookPluginSuite

__all__ = ["HookPluginSuite"]
