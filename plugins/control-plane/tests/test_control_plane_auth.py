"""Every admin operation names a permission an API token can hold."""

from __future__ import annotations

import pytest

from tollway_control_plane.auth import PERMISSIONS, SUPERUSER, Forbidden, Principal, permission_for
from tollway_control_plane.service import OPERATIONS


@pytest.mark.parametrize("name", [op.name for op in OPERATIONS])
def test_every_operation_needs_a_known_permission(name: str) -> None:
    needed = permission_for(name)
    assert needed is None or needed in PERMISSIONS
    SUPERUSER.require(name)


def test_a_token_without_the_permission_is_refused_saying_which() -> None:
    reader = Principal("reader", frozenset({"virtualKeys:read"}))
    reader.require("keys.list")
    with pytest.raises(Forbidden, match="virtualKeys:create") as info:
        reader.require("keys.create")
    assert info.value.status == 403
