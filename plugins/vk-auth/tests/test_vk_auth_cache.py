"""The auth cache, its HTTP client and the change feed against a protocol-faithful server.

Time-dependent behaviour (soft expiry, stale-while-error, hard cap) runs on an injected clock, so
nothing here sleeps for the TTLs; the HTTP, the signatures and the long poll are real.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY
from vk_auth_support import INTERNAL, PEPPER, FakeControlPlane, bundle_for, until

from tollway import InvalidAPIKey, ServiceUnavailable
from tollway_vk_auth import AuthCache, ChangeFeed, ControlPlaneClient, VKAuthSettings
from tollway_vk_auth._bundle import principal_from_bundle
from tollway_vk_auth._client import ChangeEvent


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def setup(
    settings: VKAuthSettings | None = None, *, secret: bytes = INTERNAL
) -> AsyncIterator[tuple[FakeControlPlane, AuthCache, Clock]]:
    cp = FakeControlPlane()
    await cp.start()
    client = ControlPlaneClient(cp.url, secret, "test-node")
    await client.start()
    clock = Clock()
    cache = AuthCache(
        settings or VKAuthSettings(soft_ttl=60, soft_bump=300, hard_grace=3600),
        PEPPER,
        client,
        clock=clock,
    )
    try:
        yield cp, cache, clock
    finally:
        await cache.drain()
        await client.close()
        await cp.stop()


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


def hits(tier: str) -> float:
    return REGISTRY.get_sample_value("gateway_auth_cache_hits_total", {"tier": tier}) or 0.0


def messages(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tollway.vk_auth" and (level is None or r.levelno == level)
    ]


def test_principal_from_bundle_maps_every_field() -> None:
    b = bundle_for("vk_9", "lw_vk_test_01ABCDEFGHJKMNPQRSTVWXYZ0123")
    b["providers"].append(
        {
            "id": "mp_2",
            "name": "anthropic",
            "type": "anthropic",
            "base_url": None,
            "api_key": "sk-ant",
            "models": ["claude-*"],
            "priority": 5,
            "config": {"anthropic_version": "2023-06-01"},
            "revision": 3,
            "rpm": 10,
            "tpm": None,
            "rpd": 100,
            "model": "claude-haiku",
        }
    )
    p = principal_from_bundle(b)
    assert (p.key_id, p.name, p.organization_id, p.team_id, p.project_id) == (
        "vk_9",
        "key-vk_9",
        "org_1",
        "team_1",
        "proj_1",
    )
    assert p.display_prefix == "lw_vk_test_01ABCDE"
    assert p.config == {"models_allowed": ["gpt-4o*"]}
    assert p.revision == 1
    assert p.extras == {"otel_auth_token": None}
    first, second = p.chain
    assert first.provider.id == "mp_1" and first.provider.key == "mp_1"
    assert first.provider.tpm == 1000 and first.model is None
    assert second.provider.models == ["claude-*"] and second.provider.priority == 5
    assert second.provider.config == {"anthropic_version": "2023-06-01"}
    assert (second.provider.rpm, second.provider.rpd, second.provider.revision) == (10, 100, 3)
    assert second.model == "claude-haiku"
    # No routing_policy_id (no policy, or a control plane older than the field): the gateway
    # adds its config-file providers after this chain.
    assert p.routing_policy is None
    assert principal_from_bundle({**b, "routing_policy_id": "rp_1"}).routing_policy == "rp_1"


def test_bundle_budgets_become_principal_extras() -> None:
    budgets = [
        {
            "id": "bud_1",
            "name": None,
            "scope_type": "project",
            "scope_id": "proj_1",
            "window": "month",
            "limit_micro_usd": 10_000,
            "on_breach": "block",
            "reset_at": None,
        }
    ]
    b = bundle_for("vk_9", "lw_vk_test_01ABCDEFGHJKMNPQRSTVWXYZ0123", budgets=budgets)
    p = principal_from_bundle(b)
    assert p.extras == {"otel_auth_token": None, "budgets": budgets}
    # A bundle without the field (an older control plane) carries no budgets.
    assert "budgets" not in principal_from_bundle(bundle_for("vk_9", "x" * 40)).extras


def test_budget_change_revalidates_without_evicting() -> None:
    async def body() -> None:
        async with setup() as (cp, cache, clock):
            vk, secret = cp.add_key(budgets=[])
            feed = ChangeFeed(cache.client, cache, None, timeout_s=5)
            await cache.authenticate(secret)
            cp.bundles[vk]["budgets"] = [{"id": "bud_new"}]
            await feed.apply([ChangeEvent(1, "budget_changed")])
            (entry,) = cache.l1.values()  # still cached: servable stale-while-error …
            assert entry.soft_expires_at <= clock.now  # … but refreshed on the next request
            principal = await cache.authenticate(secret)
            assert principal is not None and principal.extras["budgets"] == [{"id": "bud_new"}]
            cp.fault = "500"  # a budget change is no revocation: stale serving still works
            await feed.apply([ChangeEvent(2, "budget_changed")])
            assert await cache.authenticate(secret) is not None

    run(body)


def test_miss_then_fresh_hits_cost_no_calls() -> None:
    async def body() -> None:
        async with setup() as (cp, cache, _):
            vk, secret = cp.add_key()
            l1, miss = hits("l1"), hits("miss")
            p = await cache.authenticate(secret)
            assert p is not None and p.key_id == vk
            assert cp.calls == [
                "POST /api/internal/gateway/resolve-key",
                f"GET /api/internal/gateway/config/{vk}",
            ]
            for _ in range(5):
                assert await cache.authenticate(secret) is p
            assert len(cp.calls) == 2
            assert hits("miss") == miss + 1 and hits("l1") == l1 + 5
            # L1 is keyed by the peppered hash, never the secret.
            assert secret not in cache.l1 and all(len(k) == 64 for k in cache.l1)

    run(body)


def test_concurrent_misses_share_one_fetch() -> None:
    async def body() -> None:
        async with setup() as (cp, cache, _):
            vk, secret = cp.add_key()
            results = await asyncio.gather(*(cache.authenticate(secret) for _ in range(25)))
            assert {r.key_id for r in results if r} == {vk}
            assert cp.calls.count("POST /api/internal/gateway/resolve-key") == 1

    run(body)


def test_stale_entry_refreshes_with_if_none_match(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tollway.vk_auth")

    async def body() -> None:
        async with setup() as (cp, cache, clock):
            vk, secret = cp.add_key()
            first = await cache.authenticate(secret)
            clock.advance(61)
            again = await cache.authenticate(secret)
            assert again == first
            assert len(cp.calls) == 4  # resolve + config (304)
            entry = next(iter(cache.l1.values()))
            assert entry.soft_expires_at == pytest.approx(clock.now + 60)
            assert any(m.startswith("auth_cache_refresh_success") for m in messages(caplog))
            # a changed bundle comes back as 200 with the new config
            cp.bundles[vk]["config"] = {"models_allowed": None}
            clock.advance(61)
            changed = await cache.authenticate(secret)
            assert changed is not None and changed.config == {"models_allowed": None}

    run(body)


def test_control_plane_down_serves_stale_then_hard_evicts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tollway.vk_auth")

    async def body() -> None:
        async with setup() as (cp, cache, clock):
            vk, secret = cp.add_key()
            assert await cache.authenticate(secret) is not None
            await cp.stop()
            clock.advance(61)
            assert (await cache.authenticate(secret)).key_id == vk  # type: ignore[union-attr]
            warn = messages(caplog, logging.WARNING)
            assert len(warn) == 1
            assert warn[0].startswith(f"auth_cache_refresh_transport_failure vk_id={vk} error=")
            assert "error_class=transport new_soft_expires_at=" in warn[0]
            assert any(
                m.startswith(f"auth_cache_serve_stale vk_id={vk} tier=l1")
                for m in messages(caplog, logging.INFO)
            )
            record = next(r for r in caplog.records if r.levelno == logging.WARNING)
            assert record.vk_id == vk and record.error_class == "transport"  # type: ignore[attr-defined]
            entry = next(iter(cache.l1.values()))
            assert entry.soft_expires_at == pytest.approx(clock.now + 300)
            # inside the bump: served without another attempt
            clock.advance(200)
            assert await cache.authenticate(secret) is not None
            assert len(messages(caplog, logging.WARNING)) == 1
            # bumps stop at the hard cap: last success + 3600 s
            for _ in range(12):
                clock.advance(301)
                if clock.now >= entry.hard_expires_at:
                    break
                assert await cache.authenticate(secret) is not None
            assert entry.soft_expires_at <= entry.hard_expires_at
            with pytest.raises(ServiceUnavailable) as info:
                await cache.authenticate(secret)
            assert info.value.code == "control_plane_unavailable"
            assert info.value.retry_after == 5
            assert any(
                m.startswith(f"auth_cache_hard_evict vk_id={vk} reason=hard_cap_exceeded")
                for m in messages(caplog, logging.ERROR)
            )
            assert len(cache.l1) == 0
            assert all(secret not in r.getMessage() for r in caplog.records)

    run(body)


def test_hard_grace_zero_disables_stale_serving(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with setup(VKAuthSettings(soft_ttl=60, soft_bump=300, hard_grace=0)) as (
            cp,
            cache,
            clock,
        ):
            _, secret = cp.add_key()
            await cache.authenticate(secret)
            await cp.stop()
            clock.advance(61)
            with pytest.raises(ServiceUnavailable):
                await cache.authenticate(secret)
            assert any("reason=hard_cap_exceeded" in m for m in messages(caplog, logging.ERROR))

    run(body)


def test_rejection_evicts_at_once_and_is_remembered(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with setup() as (cp, cache, clock):
            vk, secret = cp.add_key()
            await cache.authenticate(secret)
            cp.set_status(vk, "revoked")
            clock.advance(61)
            with pytest.raises(InvalidAPIKey) as info:
                await cache.authenticate(secret)
            assert info.value.code == "key_revoked"
            assert len(cache.l1) == 0
            assert any(
                m.startswith(f"auth_cache_hard_evict vk_id={vk} reason=auth_rejection")
                for m in messages(caplog, logging.ERROR)
            )
            calls = len(cp.calls)
            with pytest.raises(InvalidAPIKey):
                await cache.authenticate(secret)
            assert len(cp.calls) == calls  # negative cache
            cache.evict_vk(vk)  # any key event flushes it
            with pytest.raises(InvalidAPIKey):
                await cache.authenticate(secret)
            assert len(cp.calls) == calls + 1

    run(body)


@pytest.mark.parametrize(
    ("status", "code"), [("disabled", "key_disabled"), ("expired", "key_expired")]
)
def test_cold_rejections_map_codes(status: str, code: str) -> None:
    async def body() -> None:
        async with setup() as (cp, cache, _):
            vk, secret = cp.add_key()
            cp.set_status(vk, status)
            with pytest.raises(InvalidAPIKey) as info:
                await cache.authenticate(secret)
            assert info.value.code == code

    run(body)


def test_unknown_key_is_not_mine() -> None:
    async def body() -> None:
        async with setup() as (_cp, cache, _):
            from tollway.keys import mint_key

            assert await cache.authenticate(mint_key("live")) is None

    run(body)


def test_bundle_status_and_expiry_are_enforced() -> None:
    async def body() -> None:
        async with setup() as (cp, cache, clock):
            _, secret = cp.add_key(expires_at="2001-01-01T00:00:00Z")
            with pytest.raises(InvalidAPIKey) as info:
                await cache.authenticate(secret)
            assert info.value.code == "key_expired"
            soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now + 30))
            _, secret2 = cp.add_key(expires_at=soon)
            assert await cache.authenticate(secret2) is not None
            clock.advance(31)  # still fresh in L1, but the key itself has expired
            with pytest.raises(InvalidAPIKey) as info:
                await cache.authenticate(secret2)
            assert info.value.code == "key_expired"

    run(body)


def test_cold_key_while_unreachable_is_503() -> None:
    async def body() -> None:
        async with setup() as (cp, cache, _):
            _, secret = cp.add_key()
            await cp.stop()
            with pytest.raises(ServiceUnavailable) as info:
                await cache.authenticate(secret)
            assert info.value.code == "control_plane_unavailable"
            assert "LW_GATEWAY_BASE_URL" in info.value.message
            assert secret not in info.value.message
            assert cache.unreachable is not None

    run(body)


@pytest.mark.parametrize("fault", ["500", "badsig"])
def test_bad_answers_are_unavailable_not_rejections(fault: str) -> None:
    async def body() -> None:
        async with setup() as (cp, cache, _):
            _, secret = cp.add_key()
            cp.fault = fault
            with pytest.raises(ServiceUnavailable) as info:
                await cache.authenticate(secret)
            if fault == "badsig":
                assert "LW_GATEWAY_INTERNAL_SECRET" in info.value.message

    run(body)


def test_gateway_with_the_wrong_internal_secret_is_told_so() -> None:
    async def body() -> None:
        async with setup(secret=b"not-the-shared-secret") as (cp, cache, _):
            _, secret = cp.add_key()
            with pytest.raises(ServiceUnavailable) as info:
                await cache.authenticate(secret)
            assert "LW_GATEWAY_INTERNAL_SECRET" in info.value.message

    run(body)


def test_fetch_that_overlaps_an_eviction_is_redone() -> None:
    async def body() -> None:
        async with setup() as (cp, cache, _):
            vk, secret = cp.add_key()
            real = cache.client.fetch_config
            calls = 0

            async def racing(vk_id: str, jwt: str, etag: str | None) -> Any:
                nonlocal calls
                calls += 1
                result = await real(vk_id, jwt, etag)
                if calls == 1:  # the key changes while the first answer is on its way
                    cp.bundles[vk]["config"] = {"models_allowed": ["new"]}
                    cache.evict_vk(vk)
                return result

            cache.client.fetch_config = racing  # type: ignore[method-assign]
            p = await cache.authenticate(secret)
            assert p is not None and p.config == {"models_allowed": ["new"]}
            assert calls == 2

    run(body)


def test_provider_event_drops_users_and_revalidates_the_rest() -> None:
    async def body() -> None:
        async with setup() as (cp, cache, clock):
            _, a = cp.add_key()
            other = bundle_for("x", a)["providers"][0] | {"id": "mp_other"}
            _, b = cp.add_key(providers=[other])
            await cache.authenticate(a)
            await cache.authenticate(b)
            dropped = cache.evict_provider("mp_1")
            assert len(dropped) == 1
            (left,) = cache.l1.values()
            assert left.provider_ids == {"mp_other"}
            assert left.soft_expires_at <= clock.now  # revalidates on its next request

    run(body)


def test_change_feed_evicts_within_two_seconds() -> None:
    async def body() -> None:
        async with setup() as (cp, cache, _):
            vk, secret = cp.add_key()
            feed = ChangeFeed(cache.client, cache, None, timeout_s=5)
            feed.start()
            try:
                await cache.authenticate(secret)
                await until(lambda: feed.cursor is not None, 1)
                cp.set_status(vk, "revoked")
                await until(lambda: not len(cache.l1), 2)
                assert len(cache.l1) == 0, "the change feed did not evict within 2 s"
                with pytest.raises(InvalidAPIKey):
                    await cache.authenticate(secret)
                assert feed.died() is None
            finally:
                await feed.stop()

    run(body)


def test_change_feed_survives_a_control_plane_restart(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with setup() as (cp, cache, clock):
            vk, secret = cp.add_key()
            feed = ChangeFeed(cache.client, cache, None, timeout_s=1)
            feed.start()
            try:
                await cache.authenticate(secret)
                await until(lambda: feed.connected, 2)
                await cp.stop()
                await until(lambda: feed.failing, 2)
                assert cache.unreachable is not None
                clock.advance(61)
                assert await cache.authenticate(secret) is not None  # stale-while-error
                await cp.start()
                cp.event("vk_updated", vk_id=vk)  # happened while we were away
                await until(lambda: not len(cache.l1), 8)
                assert len(cache.l1) == 0
                assert cache.unreachable is None
                assert feed.died() is None
            finally:
                await feed.stop()

    run(body)
