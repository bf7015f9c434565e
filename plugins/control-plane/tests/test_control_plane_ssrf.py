"""The SSRF guard when the control plane stores URLs: provider base URLs and token endpoints,
``allow_private_network``, user info, and the guardrail webhook URLs of key configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from control_plane_helpers import PEPPER

from tollway.outbound import OutboundPolicy, parse_cidrs
from tollway_control_plane.runtime import open_store
from tollway_control_plane.service import Service
from tollway_control_plane.store import Store, ValidationError

ENCODED = [
    "http://127.0.0.1:6379/",
    "http://2130706433:6379/",
    "http://127.1:6379/",
    "http://0x7f.1:6379/",
    "http://[::ffff:127.0.0.1]:6379/",
    "http://localhost.:6379/",
    "http://LOCALHOST:6379/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00::1]/",
    "http://0.0.0.0:8000/",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "cp.db", PEPPER)  # production: the guard is on
    yield s
    s.close()


def _problems(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(exc.value.problems)


@pytest.mark.parametrize("url", ENCODED)
def test_private_base_urls_are_refused_in_every_spelling(store: Store, url: str) -> None:
    with pytest.raises(ValidationError) as info:
        store.create_provider(type="custom", name="internal", base_url=url + "v1")
    text = _problems(info)
    assert text.startswith("base_url: ") and "SSRF guard" in text
    assert "GATEWAY_OUTBOUND_ALLOW_CIDRS" in text
    ok = store.create_provider(type="custom", name="ok", base_url="https://llm.example.com/v1")
    with pytest.raises(ValidationError, match="SSRF guard"):
        store.update_provider(ok.id, base_url=url)


def test_user_info_is_refused_even_in_local_mode(tmp_path: Path) -> None:
    with (
        Store.open(tmp_path / "local.db", PEPPER, allow_private_base_urls=True) as local,
        pytest.raises(ValidationError) as info,
    ):
        local.create_provider(
            type="openai", name="x", base_url="https://bob:hunter2@api.example.com/v1"
        )
    text = _problems(info)
    assert "api_key / a header, not the URL" in text and "hunter2" not in text


def test_allow_private_network_cannot_be_stored(store: Store) -> None:
    service = Service(store)
    with pytest.raises(ValidationError) as info:
        service.providers_create(
            {
                "type": "custom",
                "name": "vllm",
                "base_url": "http://10.0.0.12:8000/v1",
                "allow_private_network": True,
            }
        )
    assert "GATEWAY_OUTBOUND_ALLOW_CIDRS" in _problems(info)
    with pytest.raises(ValidationError, match=r"config\.allow_private_network: .*CIDRS"):
        store.create_provider(
            type="custom",
            name="vllm",
            base_url="https://vllm.example.com/v1",
            config={"allow_private_network": True},
        )


def test_the_operator_allowlist_lets_a_network_through(tmp_path: Path) -> None:
    policy = OutboundPolicy(allow_cidrs=parse_cidrs("10.0.0.0/8"))
    with Store.open(tmp_path / "cp.db", PEPPER, outbound=policy) as s:
        s.create_provider(type="custom", name="vllm", base_url="http://10.0.0.12:8000/v1")
        with pytest.raises(ValidationError, match="SSRF guard"):
            s.create_provider(type="custom", name="redis", base_url="http://192.168.1.2:6379/")


def test_open_store_reads_the_allowlist(tmp_path: Path) -> None:
    env = {"GATEWAY_OUTBOUND_ALLOW_CIDRS": "10.1.0.0/16", "ENVIRONMENT": "production"}
    s, _ = open_store(tmp_path, env)
    try:
        assert s.outbound.guard and [str(n) for n in s.outbound.allow_cidrs] == ["10.1.0.0/16"]
    finally:
        s.close()
    with pytest.raises(ValueError, match="GATEWAY_OUTBOUND_ALLOW_CIDRS: 'x'"):
        open_store(tmp_path, {"GATEWAY_OUTBOUND_ALLOW_CIDRS": "x"})


@pytest.mark.parametrize("url", ENCODED)
def test_webhook_urls_in_key_configs_are_refused(store: Store, url: str) -> None:
    config = {"guardrails": {"pre": [{"evaluator": "webhook", "url": url}]}}
    with pytest.raises(ValidationError) as info:
        store.create_key(name="k", config=config)
    text = _problems(info)
    assert text.startswith("guardrails.pre[0].url: ") and "SSRF guard" in text
    key, _ = store.create_key(name="k2")
    with pytest.raises(ValidationError, match=r"guardrails\.pre\[0\]\.url"):
        store.update_key(key.id, config=config)
    public = {"guardrails": {"post": [{"evaluator": "webhook", "url": "https://g.example.com/"}]}}
    store.update_key(key.id, config=public)


def test_webhook_user_info_is_refused(store: Store) -> None:
    url = "https://user:pw@guard.example.com/check"
    config = {"guardrails": {"post": [{"evaluator": "webhook", "url": url}]}}
    with pytest.raises(ValidationError, match="not the URL"):
        store.create_key(name="k", config=config)


def test_a_stored_url_with_user_info_is_shown_masked(store: Store) -> None:
    provider = store.create_provider(type="openai", name="o", base_url="https://api.example.com")
    # A row written before this check existed.
    with store.db.transaction() as tx:
        tx.execute(
            "UPDATE model_providers SET base_url = ? WHERE id = ?",
            ("https://bob:hunter2@api.example.com/v1", provider.id),
        )
    shown = store.get_provider(provider.id).to_json()["base_url"]
    assert shown == "https://****@api.example.com/v1"
