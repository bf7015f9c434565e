"""This package passes the conformance kit's hook-plugin suite."""

from __future__ import annotations

from tollway_conformance import HookPluginSuite


class TestTollwayStaticKeysConforms(HookPluginSuite):
    entry_point = "tollway-static-keys"
