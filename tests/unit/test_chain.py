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


def test_policy_strategy_and_weights_order_the_route() -> None:
    from tollway._context import RequestContext
    from tollway._router import Router

    gw = _gateway()
    a = ProviderConfig(name="a", type="openai", api_key="sk-a", id="mp_a")
    b = ProviderConfig(name="b", type="openai", api_key="sk-b", id="mp_b")
    key = Principal(
        key_id="vk_1",
        display_prefix="lw_vk",
        chain=(ChainEntry(a, weight=0), ChainEntry(b, weight=5)),
        routing_policy="rp_1",
        routing_strategy="weighted",
    )
    entries, strategy = gw.routed_chain(key, "chat")
    assert strategy == "weighted" and [w for _, _, w in entries] == [0, 5]
    ctx = RequestContext("r", "chat", "POST", "/v1/chat/completions", b"", {}, "t", "s")
    ctx.principal, ctx.model = key, "gpt-4o"
    # Weight 0 is a fallback only: b always comes first, a still follows.
    for _ in range(20):
        assert [t.provider for t in Router(gw).route(ctx)] == ["mp_b", "mp_a"]
    assert ctx.span_attributes["langwatch.routing.strategy"] == "weighted"
    # Without a policy, the config file's [routing] strategy applies.
    assert gw.routed_chain(None)[1] == "ordered"
