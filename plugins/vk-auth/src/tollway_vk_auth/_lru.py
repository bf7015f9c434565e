"""A bounded least-recently-used map (the auth cache's L1 tier)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["LRU"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``capacity`` entries; :meth:`get` and :meth:`put` make an entry the most recent,
    and a :meth:`put` past capacity drops the least recent one. Not thread-safe (one event loop).
    """

    __slots__ = ("_data", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("an LRU needs a capacity of at least 1")
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recent), or None."""
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value for ``key`` without touching its recency."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        """Insert or replace ``key`` as the most recent entry, evicting the oldest past capacity."""
        data = self._data
        data[key] = value
        data.move_to_end(key)
        while len(data) > self.capacity:
            data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None."""
        return self._data.pop(key, None)

    def remove_if(self, predicate: Callable[[V], bool]) -> list[K]:
        """Remove every entry whose value matches; the removed keys."""
        doomed = [k for k, v in self._data.items() if predicate(v)]
        for k in doomed:
            del self._data[k]
        return doomed

    def clear(self) -> None:
        self._data.clear()

    def values(self) -> list[V]:
        return list(self._data.values())

    def keys(self) -> list[K]:
        """Keys from least to most recent."""
        return list(self._data.keys())

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))
