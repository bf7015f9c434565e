"""The L1 LRU against a list model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway_vk_auth import LRU

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 12), st.integers()),
        st.tuples(st.just("get"), st.integers(0, 12), st.none()),
        st.tuples(st.just("peek"), st.integers(0, 12), st.none()),
        st.tuples(st.just("pop"), st.integers(0, 12), st.none()),
        st.tuples(st.just("remove_odd"), st.none(), st.none()),
    ),
    max_size=80,
)


@settings(deadline=None)  # no timing assertions: the machine may be loaded
@given(st.integers(1, 6), _ops)
def test_lru_matches_a_recency_list(
    capacity: int, ops: list[tuple[str, int | None, int | None]]
) -> None:
    lru: LRU[int, int] = LRU(capacity)
    model: list[tuple[int, int]] = []  # least recent first

    def find(k: int) -> int | None:
        for i, (key, _) in enumerate(model):
            if key == k:
                return i
        return None

    for op, key, value in ops:
        if op == "put":
            assert key is not None and value is not None
            i = find(key)
            if i is not None:
                model.pop(i)
            model.append((key, value))
            while len(model) > capacity:
                model.pop(0)
            lru.put(key, value)
        elif op == "get":
            assert key is not None
            i = find(key)
            expected = None
            if i is not None:
                expected = model[i][1]
                model.append(model.pop(i))
            assert lru.get(key) == expected
        elif op == "peek":
            assert key is not None
            i = find(key)
            assert lru.peek(key) == (model[i][1] if i is not None else None)
        elif op == "pop":
            assert key is not None
            i = find(key)
            assert lru.pop(key) == (model.pop(i)[1] if i is not None else None)
        else:
            removed = lru.remove_if(lambda v: v % 2 == 1)
            assert sorted(removed) == sorted(k for k, v in model if v % 2 == 1)
            model = [(k, v) for k, v in model if v % 2 == 0]
        assert lru.keys() == [k for k, _ in model]
        assert len(lru) <= capacity


def test_lru_capacity_must_be_positive() -> None:
    import pytest

    with pytest.raises(ValueError):
        LRU(0)
