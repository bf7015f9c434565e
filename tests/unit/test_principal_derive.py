"""``Principal.derive``: what a plugin reads out of a key's config, once per principal."""

from __future__ import annotations

import attrs
import pytest

from tollway import Principal, StashKey

LIMIT: StashKey[int] = StashKey("test.limit")
OTHER: StashKey[int] = StashKey("test.other")


def test_built_on_first_use_and_reused() -> None:
    principal = Principal("vk_1", "lw_vk_1", config={"limit": 5})
    calls: list[Principal] = []

    def build(p: Principal) -> int:
        calls.append(p)
        return int(p.config["limit"]) * 2

    assert principal.derive(LIMIT, build) == 10
    assert principal.derive(LIMIT, build) == 10
    assert calls == [principal]
    # Another key of the same principal is derived on its own.
    assert principal.derive(OTHER, lambda p: 1) == 1
    assert principal.derive(LIMIT, build) == 10


def test_a_failed_build_is_not_kept() -> None:
    principal = Principal("vk_1", "lw_vk_1", config={"limit": "many"})

    def build(p: Principal) -> int:
        return int(p.config["limit"])

    for _ in range(2):
        with pytest.raises(ValueError):
            principal.derive(LIMIT, build)
    assert principal.derive(LIMIT, lambda p: 3) == 3


def test_a_changed_key_is_derived_afresh_and_values_stay_out_of_equality() -> None:
    principal = Principal("vk_1", "lw_vk_1", config={"limit": 5}, revision=1)
    assert principal.derive(LIMIT, lambda p: int(p.config["limit"])) == 5
    changed = attrs.evolve(principal, config={"limit": 7}, revision=2)
    assert changed.derive(LIMIT, lambda p: int(p.config["limit"])) == 7
    assert principal.derive(LIMIT, lambda p: -1) == 5
    assert principal == Principal("vk_1", "lw_vk_1", config={"limit": 5}, revision=1)
    assert "derived" not in repr(principal)
