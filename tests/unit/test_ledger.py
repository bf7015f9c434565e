"""``tollway.ledger``: plugins offer in-process spend ledgers through ``register_ledgers``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tollway import hookimpl
from tollway.config import Settings
from tollway.gateway import Gateway
from tollway.ledger import Ledger, LedgerInputError, ledger, ledgers


class Book:
    name = "test"

    async def record(self, entries: Sequence[dict[str, Any]], node_id: str) -> int:
        return len(entries)

    async def spend(self, queries: Sequence[dict[str, Any]]) -> list[int]:
        return [0 for _ in queries]


class Offers:
    def __init__(self, *offered: object) -> None:
        self.offered = offered
        self.calls = 0

    @hookimpl
    def register_ledgers(self, register: Callable[[Ledger], None]) -> None:
        self.calls += 1
        for item in self.offered:
            register(item)  # type: ignore[arg-type]


def gateway(*plugins: object) -> Gateway:
    extra = [(f"p{i}", p) for i, p in enumerate(plugins)]
    return Gateway(Settings(), extra_plugins=extra, load_installed=False)


def test_ledgers_are_collected_once() -> None:
    book = Book()
    offers = Offers(book)
    gw = gateway(offers)
    assert ledgers(gw) == [book]
    assert ledger(gw) is book
    assert offers.calls == 1


def test_the_first_offered_is_used() -> None:
    first, second = Book(), Book()
    assert ledger(gateway(Offers(first, second))) is first


def test_no_plugin_no_ledger() -> None:
    gw = gateway()
    assert ledgers(gw) == []
    assert ledger(gw) is None


def test_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match=r"is not a tollway\.ledger\.Ledger"):
        ledgers(gateway(Offers(object())))


def test_input_error_carries_its_message() -> None:
    exc = LedgerInputError("entries[0].cost_usd: must be an integer")
    assert isinstance(exc, ValueError)
    assert exc.message == str(exc) == "entries[0].cost_usd: must be an integer"
