"""Collecting what plugins offer through a ``register_*`` hook, once per gateway.

``tollway.spans`` and ``tollway.ledger`` share it: the hook is called the first time the list is
asked for, each offered object is checked against the interface (a runtime-checkable Protocol),
and the list is kept on ``gateway.stash``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from tollway._context import StashKey

if TYPE_CHECKING:
    from tollway.gateway import Gateway

T = TypeVar("T")


def collect(gateway: Gateway, key: StashKey[list[T]], hook: str, kind: Any, needs: str) -> list[T]:
    """What implementations of ``hook`` register, in hook call order (cached under ``key``).

    An object that is not a ``kind`` raises ``TypeError`` naming the hook, the object, the
    interface and ``needs`` (what the interface asks for); start-up stops with it.
    """
    found = gateway.stash.get(key)
    if found is not None:
        return found
    offered: list[T] = []

    def register(item: T) -> None:
        if not isinstance(item, kind):
            raise TypeError(
                f"{hook}: {item!r} is not a {kind.__module__}.{kind.__name__} (it needs {needs})"
            )
        offered.append(item)

    getattr(gateway.pm.hook, hook)(register=register, gateway=gateway)
    gateway.stash[key] = offered
    return offered
