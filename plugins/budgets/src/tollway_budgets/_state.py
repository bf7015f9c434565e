"""What the plugin keeps: per gateway (:class:`State`, on ``gateway.stash``) and per request
(:class:`Request`, on ``ctx.stash``)."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

import attrs

from tollway import Principal, ServiceUnavailable, StashKey
from tollway.redis import FailurePolicy, RedisFacility
from tollway_budgets._budgets import Budget, BudgetConfigError, Counter, parse_budgets
from tollway_budgets._client import ControlPlaneClient, LocalControlPlane
from tollway_budgets._heal import Journal
from tollway_budgets._metrics import REDIS_ERRORS
from tollway_budgets._outbox import Outbox
from tollway_budgets._prices import PriceError, Prices, PriceTable, override_entry, parse_override
from tollway_budgets._settings import BudgetSettings
from tollway_budgets._store import LocalStore, RedisStore

if TYPE_CHECKING:
    from quart import Quart

    from tollway.config import ProviderConfig
    from tollway_budgets._plan import Plan

__all__ = [
    "APP",
    "AVERAGE_MIN_SAMPLES",
    "CACHE_LIMIT",
    "REQUEST",
    "STATE",
    "WARN_EVERY",
    "Average",
    "Request",
    "State",
    "failure_policy",
]

log = logging.getLogger("tollway.budgets")

WARN_EVERY = 10.0
CACHE_LIMIT = 10_000
#: Samples of a model's output before ``recent_average`` trusts its average.
AVERAGE_MIN_SAMPLES = 5


@attrs.define(eq=False)
class Average:
    samples: int = 0
    value: float = 0.0

    def add(self, tokens: int) -> None:
        self.samples += 1
        self.value += (tokens - self.value) / min(self.samples, 20)


@attrs.define(eq=False)
class Request:
    """What one request took (``admit``) and what it already recorded."""

    counters: list[Counter] = attrs.field(factory=list)
    amounts: list[int] = attrs.field(factory=list)
    spooled: bool = False
    cost: int | None = None
    terminal_seen: bool = False
    #: Admitted fail-open (Redis unreachable): the counters its cost must still reach
    #: (through the journal, :mod:`tollway_budgets._heal`).
    unseen: list[Counter] = attrs.field(factory=list)


@attrs.define(eq=False)
class State:
    settings: BudgetSettings
    table: PriceTable
    store: LocalStore | RedisStore
    client: ControlPlaneClient | LocalControlPlane | None
    outbox: Outbox | None
    node_id: str
    unknown_prices: Prices | None
    policy: FailurePolicy
    #: The gateway's Redis (None: counters in process).
    facility: RedisFacility | None = None
    last_seed_warning: float = -math.inf
    last_purge: float = 0.0
    budgets: dict[int, tuple[object, tuple[Budget, ...] | BudgetConfigError]] = attrs.field(
        factory=dict
    )
    overrides: dict[int, tuple[object, dict[str, Any] | PriceError]] = attrs.field(factory=dict)
    #: (id of a provider's ``config.prices``, provider name, model, provider type) → (that
    #: ``config.prices`` object, the prices it gives the model): built once, not per request.
    override_prices: dict[tuple[int, str, str, str], tuple[object, Prices | None]] = attrs.field(
        factory=dict
    )
    #: id of a principal → what admission worked out for that key (:mod:`tollway_budgets._plan`).
    plans: dict[int, Plan] = attrs.field(factory=dict)
    seeding: dict[str, asyncio.Future[None]] = attrs.field(factory=dict)
    averages: dict[str, Average] = attrs.field(factory=dict)
    unpriced: set[str] = attrs.field(factory=set)
    tasks: set[asyncio.Task[Any]] = attrs.field(factory=set)
    #: With Redis: this replica's in-flight reservations, request id → (their zset keys, when
    #: reserved (monotonic)): the leases the heartbeat renews, for reservation_ttl_seconds
    #: at most.
    leases: dict[str, tuple[list[str], float]] = attrs.field(factory=dict)
    #: Settlements that failed (Redis timed out), retried by the heartbeat: request id →
    #: (counters' (hash, zset) keys, costs, when first tried (monotonic)).
    unsettled: dict[str, tuple[list[tuple[str, str]], list[int], float]] = attrs.field(factory=dict)
    heartbeat: asyncio.Task[None] | None = None
    #: With Redis: spend admitted fail-open, replayed into Redis when it answers again.
    journal: Journal = attrs.field(
        default=attrs.Factory(lambda self: Journal(self.node_id), takes_self=True)
    )

    #: The settings admission passes to the scripts, in ms (worked out once, not per request):
    #: the reservation's lease (Redis) and TTL (in process), the seed retry, and how long after
    #: its window a counter is kept.
    lease_ms: int = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda s: round(s.settings.reservation_lease_seconds * 1000), takes_self=True
        ),
    )
    ttl_ms: int = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda s: round(s.settings.reservation_ttl_seconds * 1000), takes_self=True
        ),
    )
    retry_ms: int = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda s: round(s.settings.seed_retry_seconds * 1000), takes_self=True
        ),
    )
    grace_ms: int = attrs.field(
        init=False, default=attrs.Factory(lambda s: s.ttl_ms + 3_600_000, takes_self=True)
    )

    @property
    def redis(self) -> bool:
        return isinstance(self.store, RedisStore)

    # --- caches keyed by the identity of a bundle's objects ------------------------------

    def budgets_of(self, principal: Principal, raw: Any) -> tuple[Budget, ...]:
        cached = self.budgets.get(id(raw))
        if cached is None or cached[0] is not raw:
            try:
                parsed: tuple[Budget, ...] | BudgetConfigError = parse_budgets(raw, principal)
            except BudgetConfigError as exc:
                parsed = exc
            if len(self.budgets) > CACHE_LIMIT:
                self.budgets.clear()
            cached = (raw, parsed)
            self.budgets[id(raw)] = cached
        result = cached[1]
        if isinstance(result, BudgetConfigError):
            raise ServiceUnavailable(
                f"the virtual key {principal.display_prefix}… has budgets the gateway cannot "
                f"read ({result}); ask the operator to fix them",
                code="budget_config_invalid",
            )
        return result

    def override_of(self, config: ProviderConfig) -> dict[str, Any]:
        raw = config.config.get("prices")
        if raw is None:
            return {}
        cached = self.overrides.get(id(raw))
        if cached is None or cached[0] is not raw:
            try:
                parsed: dict[str, Any] | PriceError = parse_override(
                    raw, f"providers[{config.name}].config.prices"
                )
            except PriceError as exc:
                log.error("budget_price_override_invalid provider=%s error=%s", config.name, exc)
                parsed = exc
            if len(self.overrides) > CACHE_LIMIT:
                self.overrides.clear()
            cached = (raw, parsed)
            self.overrides[id(raw)] = cached
        result = cached[1]
        return {} if isinstance(result, PriceError) else result

    # --- prices --------------------------------------------------------------------------

    def prices(
        self, model: str, config: ProviderConfig | None, provider_type: str
    ) -> Prices | None:
        """The provider's ``config.prices`` for ``model`` over the table's, else the table's."""
        base = self.table.lookup(model, provider_type)
        raw = None if config is None else config.config.get("prices")
        if config is None or raw is None:
            return base
        memo_key = (id(raw), config.name, model, provider_type)
        memo = self.override_prices.get(memo_key)
        if memo is not None and memo[0] is raw:
            return memo[1]
        override = self.override_of(config)
        key = override_entry(override, model) if override else None
        found = (
            base
            if key is None
            else Prices.per_mtok(override[key], base, f"provider:{config.name}:{key}")
        )
        if len(self.override_prices) > CACHE_LIMIT:
            self.override_prices.clear()
        self.override_prices[memo_key] = (raw, found)
        return found

    def priced(self, model: str, found: Prices | None) -> Prices | None:
        if found is not None:
            return found
        if model not in self.unpriced and len(self.unpriced) < CACHE_LIMIT:
            self.unpriced.add(model)
            log.warning(
                "budget_price_unknown model=%s: neither the price table nor the provider's "
                "config.prices knows it; %s",
                model,
                "using plugin.budgets.unknown_model_prices"
                if self.unknown_prices is not None
                else "its calls cost 0 — add config.prices to the provider",
            )
        return self.unknown_prices

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


STATE: StashKey[State] = StashKey("tollway-budgets.state")
APP: StashKey[Quart] = StashKey("tollway-budgets.app")
REQUEST: StashKey[Request] = StashKey("tollway-budgets.request")


def failure_policy(settings: BudgetSettings) -> FailurePolicy:
    """What the budget counters do while Redis fails (``on_redis_error``)."""
    return FailurePolicy(
        log,
        "budget_redis_unavailable policy=%(policy)s during=%(during)s error=%(error)s",
        recovered="budget_redis_recovered",
        errors=REDIS_ERRORS,
        on_error=settings.on_redis_error,
        retry_interval=settings.redis_retry_interval_seconds,
        warn_every=WARN_EVERY,
        refusal=(
            "the gateway's budget counters cannot reach Redis, and it is configured to refuse "
            "requests then (plugin.budgets.on_redis_error = fail_closed); retry shortly, or ask "
            "the operator to check GATEWAY_REDIS_URL"
        ),
        refusal_code="budget_counters_unavailable",
    )
