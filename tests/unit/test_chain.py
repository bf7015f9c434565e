"""``Gateway.chain``: the one precedence of a key's store chain and the config-file providers."""

from __future__ import annotations

from tollway import Principal
from tollway._types import ChainEntry
from tollway.config import PluginSelection, ProviderConfig, Settings
from tollway.gateway import Gateway

CONFIG_FILE = [
    ProviderConfig(name="cfg-openai", type="openai", api_key="sk-1", priority=1),
    ProviderConfig(name="cfg-anthropic", type="anthropic", api_key="sk-2", priority=1),
    ProviderConfig(name="cfg-first", type="openai", api_key="sk-3", priority=0),
]
STORE = ProviderConfig(name="store-openai", type="openai", api_key="sk-4", id="mp_1", priority=9)


def _gateway() -> Gateway:
    allow = ["tollway-provider-openai", "tollway-provider-anthropic"]
    return Gateway(Settings(providers=CONFIG_FILE, plugins=PluginSelection(allow=allow)))


def _names(chain: list[tuple[object, str | None]]) -> list[tuple[str, str | None]]:
    return [(p.name, pinned) for p, pinned in chain]  # type: ignore[attr-defined]


def test_static_keys_reach_the_config_file_by_priority_native_first() -> None:
    gw = _gateway()
    assert _names(gw.chain(None)) == [
        ("cfg-first", None),
        ("cfg-openai", None),
        ("cfg-anthropic", None),
    ]
    # Same priority: the provider speaking the client's format natively goes first.
    assert [n for n, _ in _names(gw.chain(None, "messages"))] == [
        "cfg-first",
        "cfg-anthropic",
        "cfg-openai",
    ]


def test_store_chain_first_then_the_config_file() -> None:
    key = Principal("vk_1", "lw_vk", chain=(ChainEntry(STORE),))
    assert [n for n, _ in _names(_gateway().chain(key))] == [
        "store-openai",
        "cfg-first",
        "cfg-openai",
        "cfg-anthropic",
    ]


def test_a_routing_policy_is_exactly_its_chain() -> None:
    key = Principal(
        "vk_1", "lw_vk", chain=(ChainEntry(STORE, "gpt-4o-mini"),), routing_policy="rp_1"
    )
    assert _names(_gateway().chain(key)) == [("store-openai", "gpt-4o-mini")]
    empty = Principal("vk_2", "lw_vk", routing_policy="rp_2")
    assert _gateway().chain(empty) == []
