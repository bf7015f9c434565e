"""model_aliases and models_allowed end to end: official SDKs → gateway → simulator."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tollway.testing import GatewayProcess as Gateway
from tollway.testing import (
    Simulator,
    StaticKey,
    default_providers,
    start_gateway,
    start_simulator,
    stop,
)

HELLO = [{"role": "user", "content": "Say hello"}]
HAS_POLICY_RULES = importlib.util.find_spec("tollway_policy_rules") is not None

#: Only these plugins load, so other installed plugins cannot change what these tests see.
MODULES = (
    "tollway_static_keys",
    "tollway_provider_openai",
    "tollway_provider_anthropic",
    "tollway_model_access",
)

KEYS: dict[str, dict[str, Any]] = {
    "plain": {},
    "aliases": {
        "model_aliases": {
            "fast": "gpt-4o-mini",
            "claude-fast": "claude-haiku-4-5",
            "reason": "o4-mini",
            "embed": "text-embedding-3-small",
            "gpt-4o": "gpt-4o",  # maps to itself: nothing to rewrite
        }
    },
    "allowed": {
        "models_allowed": ["gpt-4o", "claude-haiku-*", "text-embedding-3-*", "openai/gpt-4.1*"],
        "model_aliases": {"smart": "gpt-5", "quick": "gpt-4o", "cheap": "claude-haiku-4-5"},
    },
    "none_allowed": {"models_allowed": []},
    "bad": {"models_allowed": "gpt-4o", "model_aliases": {"x": 1}},
    "ordered": {
        "models_allowed": ["claude-*"],
        "policy_rules": {"tools": {"deny": ["^Bash$"]}},
    },
}

# route → (allowed model, refused model, alias, the alias's target)
ROUTES: dict[str, tuple[str, str, str, str]] = {
    "chat": ("gpt-4o", "gpt-4o-mini", "fast", "gpt-4o-mini"),
    "messages": ("claude-haiku-4-5", "claude-opus-4-1", "claude-fast", "claude-haiku-4-5"),
    "responses": ("gpt-4o", "o4-mini", "reason", "o4-mini"),
    "embeddings": (
        "text-embedding-3-small",
        "text-embedding-ada-002",
        "embed",
        "text-embedding-3-small",
    ),
}
PATHS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
}


def raw_body(route: str, model: str) -> bytes:
    """A request body with odd spacing, so a re-serialisation would show."""
    rest = {
        "chat": '"messages": [ {"role":"user","content":"hi"} ],  "zz_extra": [1, 2.50]',
        "messages": '"max_tokens":  16, "messages": [{"role":"user","content":"hi"}]',
        "responses": '"input" :"hi",  "store": false',
        "embeddings": '"input": ["hi",  "there"]',
    }[route]
    return f'{{"model":  "{model}", {rest}}}'.encode()


def headers(route: str) -> dict[str, str]:
    return {"anthropic-version": "2023-06-01"} if route == "messages" else {}


def sdk_call(gw: Gateway, key: str, route: str, model: str) -> Any:
    if route == "chat":
        return gw.openai(key).chat.completions.with_raw_response.create(
            model=model,
            messages=HELLO,  # type: ignore[arg-type]
        )
    if route == "messages":
        return gw.anthropic(key).messages.with_raw_response.create(
            model=model,
            max_tokens=16,
            messages=HELLO,  # type: ignore[arg-type]
        )
    if route == "responses":
        return gw.openai(key).responses.with_raw_response.create(model=model, input="hi")
    return gw.openai(key).embeddings.with_raw_response.create(model=model, input="hi")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def gw(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    modules = (*MODULES, "tollway_policy_rules") if HAS_POLICY_RULES else MODULES
    g = start_gateway(
        tmp_path_factory.mktemp("model-access-gw"),
        providers=default_providers(sim.url),
        keys=[StaticKey(name=name, config=config) for name, config in KEYS.items()],
        plugins=modules,
    )
    yield g
    stop(g.proc)


# --- aliases -------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_alias_is_rewritten_before_dispatch(gw: Gateway, sim: Simulator, route: str) -> None:
    _, _, alias, target = ROUTES[route]
    sim.clear()
    raw = sdk_call(gw, "aliases", route, alias)
    assert raw.headers["x-langwatch-model"] == target
    assert json.loads(sim.last_body())["model"] == target
    # Only the model changes; every other field arrives as the client sent it.
    sim.clear()
    r = gw.post("aliases", PATHS[route], raw_body(route, alias), headers(route))
    assert r.status_code == 200, r.text
    assert json.loads(sim.last_body()) == {**json.loads(raw_body(route, alias)), "model": target}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("key", ["aliases", "allowed", "plain"])
def test_unchanged_body_is_forwarded_byte_for_byte(
    gw: Gateway, sim: Simulator, route: str, key: str
) -> None:
    allowed = ROUTES[route][0]
    sim.clear()
    body = raw_body(route, allowed)
    r = gw.post(key, PATHS[route], body, headers(route))
    assert r.status_code == 200, r.text
    assert sim.last_body() == body


# --- models_allowed ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_models_allowed_refuses_with_403(gw: Gateway, sim: Simulator, route: str) -> None:
    allowed, refused, _, _ = ROUTES[route]
    sim.clear()
    error = anthropic.PermissionDeniedError if route == "messages" else openai.PermissionDeniedError
    with pytest.raises(error) as info:
        sdk_call(gw, "allowed", route, refused)
    response = info.value.response
    body = response.json()
    err = body["error"]
    assert (err["type"], err["code"], err["param"]) == (
        "model_not_allowed",
        "model_not_allowed",
        "model",
    )
    assert f'"{refused}"' in err["message"] and "models_allowed" in err["message"]
    assert "tollway virtual-keys update" in err["message"]
    assert response.headers["x-should-retry"] == "false"
    if route == "messages":
        assert body["type"] == "error"
    assert sim.requests() == []
    sdk_call(gw, "allowed", route, allowed)


def test_qualified_model_is_judged_as_given_and_bare(gw: Gateway, sim: Simulator) -> None:
    client = gw.openai("allowed")
    sim.clear()
    client.chat.completions.create(model="openai/gpt-4o", messages=HELLO)  # allowed by "gpt-4o"
    assert json.loads(sim.last_body())["model"] == "gpt-4o"
    client.chat.completions.create(model="openai/gpt-4.1-mini", messages=HELLO)  # "openai/gpt-4.1*"
    client.chat.completions.create(model="sim-openai/gpt-4o", messages=HELLO)  # a provider's name
    for refused in ("gpt-4.1", "unknown/gpt-4o", "openai/gpt-5"):
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model=refused, messages=HELLO)


def test_alias_is_judged_on_its_target(gw: Gateway, sim: Simulator) -> None:
    client = gw.openai("allowed")
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="smart", messages=HELLO)
    message = info.value.response.json()["error"]["message"]
    assert '"smart" (an alias for "gpt-5" in model_aliases)' in message
    sim.clear()
    client.chat.completions.create(model="quick", messages=HELLO)
    assert json.loads(sim.last_body())["model"] == "gpt-4o"


def test_empty_allowlist_allows_nothing(gw: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("none_allowed").chat.completions.create(model="gpt-4o", messages=HELLO)
    assert "empty list" in info.value.response.json()["error"]["message"]


def test_wrong_typed_config_is_503_naming_the_field(gw: Gateway) -> None:
    r = gw.post("bad", PATHS["chat"], raw_body("chat", "gpt-4o"))
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("service_unavailable", "key_config_invalid")
    assert "models_allowed: must be null" in err["message"]
    assert "model_aliases.x: must be a model id" in err["message"]
    assert r.headers["x-langwatch-retry-after"] == "300" and r.headers["x-should-retry"] == "false"
    assert "retry-after" not in r.headers
    with pytest.raises(openai.InternalServerError):
        gw.openai("bad").models.list()


@pytest.mark.skipif(not HAS_POLICY_RULES, reason="tollway-policy-rules is not installed")
def test_policy_rules_run_before_model_access(gw: Gateway) -> None:
    tools: Any = [{"type": "function", "function": {"name": "Bash", "parameters": {}}}]
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("ordered").chat.completions.create(model="gpt-4o", messages=HELLO, tools=tools)
    assert info.value.response.json()["error"]["type"] == "tool_not_allowed"
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai("ordered").chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.response.json()["error"]["code"] == "model_not_allowed"


# --- GET /v1/models ------------------------------------------------------------------------------


def model_ids(gw: Gateway, key: str) -> list[str]:
    return [m.id for m in gw.openai(key).models.list()]


def test_models_list_is_filtered_and_lists_aliases(gw: Gateway) -> None:
    everything = model_ids(gw, "plain")
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "claude-haiku-4-5"} <= set(everything)
    ids = model_ids(gw, "allowed")
    assert sorted(ids) == sorted(
        ["gpt-4o", "openai/gpt-4.1", "text-embedding-3-small", "claude-haiku-4-5", "quick", "cheap"]
    )
    assert "smart" not in ids  # its target is refused
    assert model_ids(gw, "none_allowed") == []
    with_aliases = model_ids(gw, "aliases")
    assert with_aliases[: len(everything)] == everything
    assert sorted(with_aliases[len(everything) :]) == ["claude-fast", "embed", "fast", "reason"]
