"""models_allowed globs, model_aliases, validation and the hooks, in process."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tollway_model_access as ma
from tollway import ModelNotAllowed, Principal, RequestContext, ServiceUnavailable, Stash

MODEL = st.text("abcdefgho-1234.:/_", min_size=1, max_size=14)
RULE = st.one_of(MODEL, MODEL.map(lambda m: m + "*"), st.just("*"))


class FakeProvider:
    def __init__(self, type_: str, name: str, models: list[str]) -> None:
        self.type, self.name, self._models = type_, name, models

    def models(self) -> list[str]:
        return list(self._models)


class FakeGateway:
    def __init__(self, providers: list[FakeProvider] | None = None) -> None:
        self.stash = Stash()
        self.providers_in_order = providers or []
        self.providers = {p.name: p for p in self.providers_in_order}
        self.provider_classes = {"openai": object, "anthropic": object}

    def chain(self, principal: Any, endpoint: str | None = None) -> list[tuple[Any, None]]:
        return [(p, None) for p in self.providers_in_order]


def ctx_for(config: dict[str, Any], model: str = "gpt-4o", gateway: Any = None) -> RequestContext:
    ctx = RequestContext(
        request_id="grq_test",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 32,
        span_id="0" * 16,
        gateway=gateway if gateway is not None else FakeGateway(),
    )
    ctx.raw_body = b'{"model": "%s", "messages": []}' % model.encode()
    ctx.body = {"model": model, "messages": []}
    ctx.model = model
    ctx.principal = Principal(key_id="vk_1", display_prefix="lw_vk_test_01", config=config)
    return ctx


# --- globs (property-based) ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(RULE, max_size=6), model=MODEL)
def test_compiled_matcher_agrees_with_the_rule_by_rule_definition(
    rules: list[str], model: str
) -> None:
    access = ma.compile_access({"models_allowed": rules})
    assert access.allows(model) == any(ma.glob_matches(r, model) for r in rules)


@given(model=MODEL)
def test_star_allows_everything_and_empty_list_nothing(model: str) -> None:
    assert ma.compile_access({"models_allowed": ["*"]}).allows(model)
    assert not ma.compile_access({"models_allowed": []}).allows(model)
    assert ma.compile_access({"models_allowed": None}).allows(model)
    assert ma.compile_access({}).allows(model)


@given(prefix=MODEL, suffix=st.text(max_size=10))
def test_trailing_star_admits_every_extension(prefix: str, suffix: str) -> None:
    access = ma.compile_access({"models_allowed": [prefix + "*"]})
    assert access.allows(prefix + suffix)
    assert access.allows(prefix)


@given(rule=MODEL, model=MODEL)
def test_exact_rule_admits_only_itself(rule: str, model: str) -> None:
    assert ma.compile_access({"models_allowed": [rule]}).allows(model) == (model == rule)


@given(model=MODEL, rules=st.lists(MODEL, max_size=4))
def test_qualified_request_is_judged_bare_only_for_providers(model: str, rules: list[str]) -> None:
    if "/" in model:
        return
    access = ma.compile_access({"models_allowed": [*rules, model]})
    principal = Principal(key_id="k", display_prefix="p")
    gw = FakeGateway([FakeProvider("openai", "primary", [])])
    for prefix in ("openai", "anthropic", "primary"):
        assert ma.admitted(access, f"{prefix}/{model}", gw, principal)
    if not access.allows(f"nope/{model}"):
        assert not ma.admitted(access, f"nope/{model}", gw, principal)


# --- validate_config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,errors",
    [
        ({}, []),
        ({"models_allowed": None, "model_aliases": None}, []),
        ({"models_allowed": ["gpt-4o", "claude-*", "*"], "model_aliases": {"a": "b"}}, []),
        ({"models_allowed": []}, []),
        ({"models_allowed": "gpt-4o"}, ["models_allowed: must be null (every model)"]),
        ({"models_allowed": ["ok", 3]}, ["models_allowed[1]: must be a model id (a string)"]),
        ({"models_allowed": [""]}, ["models_allowed[0]: must not be empty"]),
        ({"models_allowed": ["gpt-*-mini"]}, ['models_allowed[0]: "gpt-*-mini" has a * before']),
        ({"models_allowed": ["**"]}, ['models_allowed[0]: "**" has a * before']),
        ({"model_aliases": ["a"]}, ["model_aliases: must be null or an object"]),
        ({"model_aliases": {"fast": None}}, ["model_aliases.fast: must be a model id"]),
        ({"model_aliases": {"fast": ""}}, ["model_aliases.fast: must not be empty"]),
        (
            {"model_aliases": {"a": "b", "b": "c"}},
            ['model_aliases.a: "b" is itself an alias; aliases resolve once'],
        ),
        ({"model_aliases": {"same": "same"}}, []),
    ],
)
def test_validate_config(config: dict[str, Any], errors: list[str]) -> None:
    found = ma.validate_config(config)
    assert len(found) == len(errors), found
    for got, want in zip(found, errors, strict=True):
        assert got.startswith(want), got


# --- the admit hook ------------------------------------------------------------------------------


def test_alias_rewrites_the_body_only_when_the_model_changes() -> None:
    config = {"model_aliases": {"fast": "gpt-4o-mini", "gpt-4o": "gpt-4o"}}
    ctx = ctx_for(config, "fast")
    ma.admit(ctx)
    # The context owns the model; the body keeps the client's and is re-serialised only for
    # the upstream, with the new model.
    assert ctx.model == "gpt-4o-mini" and ctx.body["model"] == "fast"
    assert not ctx.body_modified
    assert orjson.loads(ctx.body_bytes()) == {**ctx.body, "model": "gpt-4o-mini"}
    for model in ("gpt-4o", "other"):
        ctx = ctx_for(config, model)
        ma.admit(ctx)
        assert ctx.model == model and not ctx.body_modified
        assert ctx.body_bytes() == ctx.raw_body


def test_key_without_model_config_is_untouched() -> None:
    ctx = ctx_for({"policy_rules": {}}, "anything", gateway=object())  # no stash needed
    ma.admit(ctx)
    assert not ctx.body_modified


def test_refusal_names_model_rule_and_fix() -> None:
    with pytest.raises(ModelNotAllowed) as info:
        ma.admit(ctx_for({"models_allowed": ["gpt-4o*"]}, "o1"))
    err = info.value
    assert err.code == "model_not_allowed" and err.param == "model"
    assert '"o1"' in err.message and '["gpt-4o*"]' in err.message
    assert '\'{"models_allowed":["gpt-4o*","o1"]}\'' in err.message
    assert "'{\"models_allowed\": null}'" in err.message


def test_long_allowlist_is_shortened_in_the_message() -> None:
    rules = [f"m{i}" for i in range(50)]
    with pytest.raises(ModelNotAllowed) as info:
        ma.admit(ctx_for({"models_allowed": rules}, "x"))
    assert (
        "… (50 entries)" in info.value.message
        and '"m30"' not in info.value.message.split("tollway virtual-keys")[0]
    )


def test_invalid_config_is_503_not_a_crash() -> None:
    for config in ({"models_allowed": 5}, {"model_aliases": "x"}, {"models_allowed": [None]}):
        with pytest.raises(ServiceUnavailable) as info:
            ma.admit(ctx_for(config))
        assert info.value.code == "key_config_invalid"
        assert info.value.headers()["x-should-retry"] == "false"


def test_request_time_check_refuses_only_what_would_break() -> None:
    config = {"models_allowed": ["gpt-*-mini", ""], "model_aliases": {"a": "b", "b": "gpt-4o"}}
    assert len(ma.validate_config(config)) == 3  # refused on write
    ctx = ctx_for(config, "a")
    with pytest.raises(ModelNotAllowed):  # one hop: a → b, and "b" is not allowed
        ma.admit(ctx)
    assert ctx.model == "b"
    with pytest.raises(ModelNotAllowed):  # a mid-* entry is a literal id
        ma.admit(ctx_for(config, "gpt-4o-mini"))
    ma.admit(ctx_for(config, "gpt-*-mini"))


def test_cache_compiles_once_per_config_object() -> None:
    gw = FakeGateway()
    config = {"models_allowed": ["gpt-4o"]}
    ma.admit(ctx_for(config, gateway=gw))
    cache = gw.stash[ma._CACHE]
    first = cache.get(config)
    ma.admit(ctx_for(config, gateway=gw))
    assert cache.get(config) is first and len(cache) == 1
    small = ma.AccessCache(max_entries=2)
    configs = [{"models_allowed": [str(i)]} for i in range(5)]
    for c in configs:
        small.get(c)
    assert len(small) == 2


# --- filter_models -------------------------------------------------------------------------------


def test_filter_lists_qualified_forms_and_admitted_aliases() -> None:
    gw = FakeGateway(
        [
            FakeProvider("openai", "sim-openai", ["gpt-4o", "gpt-4.1", "o1"]),
            FakeProvider("anthropic", "sim-anthropic", ["claude-haiku-4-5"]),
        ]
    )
    config = {
        "models_allowed": ["gpt-4o", "openai/gpt-4.1*", "sim-anthropic/*"],
        "model_aliases": {"a": "gpt-4o", "b": "o1", "c": "openai/gpt-4.1-mini", "o1": "x"},
    }
    models = ["gpt-4o", "gpt-4.1", "o1", "claude-haiku-4-5"]
    ma.filter_models(ctx_for(config, gateway=gw), models)
    assert models == ["gpt-4o", "openai/gpt-4.1", "sim-anthropic/claude-haiku-4-5", "a", "c"]
