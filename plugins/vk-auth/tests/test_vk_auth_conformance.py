"""This package passes the conformance kit's hook-plugin suite."""

from __future__ import annotations

from tollway_conformance import HookPluginSuite


class TestTollwayVkAuthConforms(HookPluginSuite):
    entry_point = "tollway-vk-auth"
