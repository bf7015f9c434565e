"""The embedded control plane offers its ledger through ``register_ledgers``
(``tollway.ledger``), so spend writers never import this package."""

from __future__ import annotations

import asyncio

import pytest

import tollway_control_plane
from tollway.config import Settings
from tollway.gateway import Gateway
from tollway.ledger import Ledger, LedgerInputError, ledger


def gateway() -> Gateway:
    plugin = ("tollway-control-plane", tollway_control_plane)
    return Gateway(Settings(), extra_plugins=[plugin], load_installed=False)


def test_embedded_offers_its_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LW_GATEWAY_BASE_URL", raising=False)
    found = ledger(gateway())
    assert isinstance(found, tollway_control_plane.EmbeddedLedger)
    assert isinstance(found, Ledger)


def test_standalone_offers_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LW_GATEWAY_BASE_URL", "http://control-plane:5560")
    assert ledger(gateway()) is None


def test_bad_input_is_a_ledger_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LW_GATEWAY_BASE_URL", raising=False)
    found = ledger(gateway())
    assert found is not None
    with pytest.raises(LedgerInputError, match=r"entries\[0\]"):
        asyncio.run(found.record([{"nonsense": True}], "node"))
    with pytest.raises(LedgerInputError, match=r"queries\[0\]"):
        asyncio.run(found.spend([{}]))
