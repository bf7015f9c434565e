"""Budgets find an in-process ledger through ``tollway.ledger`` (any plugin may offer one; the
embedded control plane does), never by importing the control plane."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tollway import hookimpl
from tollway.config import Settings
from tollway.gateway import Gateway
from tollway.ledger import Ledger, LedgerInputError
from tollway_budgets import _plugin
from tollway_budgets._client import ControlPlaneUnavailable, LedgerRejected, LocalControlPlane


class Book:
    name = "book"

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.recorded: list[tuple[list[dict[str, Any]], str]] = []

    async def record(self, entries: Sequence[dict[str, Any]], node_id: str) -> int:
        if self.fail is not None:
            raise self.fail
        self.recorded.append((list(entries), node_id))
        return len(entries)

    async def spend(self, queries: Sequence[dict[str, Any]]) -> list[int]:
        if self.fail is not None:
            raise self.fail
        return [7 for _ in queries]


class Offers:
    def __init__(self, book: Book) -> None:
        self.book = book

    @hookimpl
    def register_ledgers(self, register: Callable[[Ledger], None]) -> None:
        register(self.book)


def test_the_offered_ledger_is_found_without_the_control_plane() -> None:
    book = Book()
    gw = Gateway(Settings(), extra_plugins=[("book", Offers(book))], load_installed=False)
    assert _plugin._embedded_ledger(gw) is book
    bare = Gateway(Settings(), load_installed=False)
    assert _plugin._embedded_ledger(bare) is None


def test_local_control_plane_over_a_ledger() -> None:
    book = Book()
    local = LocalControlPlane(book, "node-1")
    assert asyncio.run(local.send_ledger([{"request_id": "a"}])) == 1
    assert book.recorded == [([{"request_id": "a"}], "node-1")]
    assert asyncio.run(local.spend([{}, {}])) == [7, 7]


def test_refused_input_is_not_retried() -> None:
    local = LocalControlPlane(Book(LedgerInputError("entries[0]: must be an object")), "n")
    with pytest.raises(LedgerRejected) as info:
        asyncio.run(local.send_ledger([{}]))
    assert info.value.status == 400
    assert "entries[0]: must be an object" in str(info.value)


def test_a_failing_ledger_is_unavailable() -> None:
    local = LocalControlPlane(Book(OSError("disk full")), "n")
    with pytest.raises(ControlPlaneUnavailable) as info:
        asyncio.run(local.send_ledger([{}]))
    assert not isinstance(info.value, LedgerRejected)
    assert "disk full" in str(info.value)
