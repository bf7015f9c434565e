"""The suite itself: it passes a good plugin and fails a broken one with a useful message."""

from __future__ import annotations

import pytest

from tollway_conformance import HookPluginSuite


class TestStaticKeysConforms(HookPluginSuite):
    entry_point = "tollway-static-keys"


def test_missing_entry_point_says_what_to_fix() -> None:
    class Missing(HookPluginSuite):
        entry_point = "tollway-not-installed"

    with pytest.raises(AssertionError, match=r"project\.entry-points\.tollway"):
        Missing().test_entry_point_loads()
