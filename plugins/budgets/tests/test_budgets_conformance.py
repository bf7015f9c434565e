"""This package passes the conformance kit's hook-plugin suite."""

from __future__ import annotations

from tollway_conformance import HookPluginSuite


class TestTollwayBudgetsConforms(HookPluginSuite):
    entry_point = "tollway-budgets"
