"""Spend budgets (SPEC §4): cost per request, budget enforcement, and the spend ledger.

How it fits the pipeline (authenticate → admit → pre_guardrail → route → dispatch → account):

* ``admit`` (``trylast``: after rate limits, policy rules, cache mode and model access — see
  docs/plugins/budgets.md for the resulting order) reads the key's budgets
  (``principal.extras["budgets"]``), refuses with 402 ``budget_exceeded`` when a ``block``
  budget's spent + reserved ≥ its limit, adds ``X-LangWatch-Budget-Warning`` from 80 %, and
  reserves the request's *estimated* cost on every applicable budget — one atomic Redis script
  (or in-process without Redis).
* ``post_guardrail`` / ``on_stream_chunk`` spool the call's ledger entry before a complete
  answer reaches the client (so a ``kill -9`` right after cannot lose it).
* ``account`` (``tryfirst``) computes the exact cost, spools the entry if not yet done (errors
  with usage, client disconnects — a cut stream is billed for what was produced), sets
  ``ctx.cost_micros`` and settles the reservation to the actual cost.
* The durable outbox (:mod:`tollway_budgets._outbox`) hands the spooled entries to the control
  plane's ledger, which records each request id once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from redis.exceptions import RedisError

from tollway import (
    BudgetExceeded,
    Principal,
    RequestContext,
    ServiceUnavailable,
    StashKey,
    Usage,
    hookimpl,
)
from tollway.secrets import load_gateway_secrets
from tollway_budgets._budgets import (
    Budget,
    BudgetConfigError,
    Counter,
    counters_for,
    end_user_of,
    parse_budgets,
)
from tollway_budgets._client import (
    ControlPlaneClient,
    ControlPlaneUnavailable,
    LocalControlPlane,
    embedded_base_url,
)
from tollway_budgets._metrics import BLOCKS, REDIS_ERRORS
from tollway_budgets._outbox import Outbox
from tollway_budgets._prices import (
    PriceError,
    Prices,
    PriceTable,
    billed_output_tokens,
    cost_micros,
    override_entry,
    parse_override,
)
from tollway_budgets._settings import NAME, BudgetSettings
from tollway_budgets._store import Admission, LocalStore, RedisStore, connect
from tollway_budgets._windows import format_us, window_bounds

if TYPE_CHECKING:
    from quart import Quart

    from tollway.config import ProviderConfig
    from tollway.gateway import Gateway, ResponseView

__all__ = [
    "WARNING_HEADER",
    "Budget",
    "BudgetSettings",
    "PriceTable",
    "Prices",
    "cost_micros",
    "estimate_micros",
]

__version__ = "0.1.0"

log = logging.getLogger("tollway.budgets")

WARNING_HEADER = "X-LangWatch-Budget-Warning"
DECISION = "langwatch.budget.decision"
_INTERNAL_PREFIX = "/api/internal/gateway/"
_BACKEND_ERRORS = (RedisError, OSError, TimeoutError)
_WARN_EVERY = 10.0
#: The line that ends a complete stream, per client endpoint. Matched at the start of a line
#: only: the same words inside an event's JSON (a model quoting them) are not the end.
_TERMINAL = {
    "chat": (b"data: [DONE]", b"data:[DONE]"),
    "messages": (b"event: message_stop", b"event:message_stop"),
    "responses": (
        b"event: response.completed",
        b"event: response.incomplete",
        b"event: response.failed",
    ),
}


def _ends_stream(chunk: bytearray, markers: tuple[bytes, ...]) -> bool:
    for marker in markers:
        at = chunk.find(marker)
        while at != -1:
            if at == 0 or chunk[at - 1] in (0x0A, 0x0D):
                return True
            at = chunk.find(marker, at + 1)
    return False


_MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_CACHE_LIMIT = 10_000
#: Samples of a model's output before ``recent_average`` trusts its average.
_AVERAGE_MIN_SAMPLES = 5


@attrs.define(eq=False)
class _Average:
    samples: int = 0
    value: float = 0.0

    def add(self, tokens: int) -> None:
        self.samples += 1
        self.value += (tokens - self.value) / min(self.samples, 20)


@attrs.define(eq=False)
class _Request:
    """What one request took (``admit``) and what it already recorded."""

    counters: list[Counter] = attrs.field(factory=list)
    amounts: list[int] = attrs.field(factory=list)
    spooled: bool = False
    cost: int | None = None
    terminal_seen: bool = False


@attrs.define(eq=False)
class _State:
    settings: BudgetSettings
    table: PriceTable
    store: LocalStore | RedisStore
    client: ControlPlaneClient | LocalControlPlane | None
    outbox: Outbox | None
    node_id: str
    unknown_prices: Prices | None
    down_until: float = 0.0
    failing: bool = False
    last_warning: float = -math.inf
    last_seed_warning: float = -math.inf
    last_purge: float = 0.0
    budgets: dict[int, tuple[object, tuple[Budget, ...] | BudgetConfigError]] = attrs.field(
        factory=dict
    )
    overrides: dict[int, tuple[object, dict[str, Any] | PriceError]] = attrs.field(factory=dict)
    seeding: dict[str, asyncio.Future[None]] = attrs.field(factory=dict)
    averages: dict[str, _Average] = attrs.field(factory=dict)
    unpriced: set[str] = attrs.field(factory=set)
    tasks: set[asyncio.Task[Any]] = attrs.field(factory=set)

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
            if len(self.budgets) > _CACHE_LIMIT:
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
            if len(self.overrides) > _CACHE_LIMIT:
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
        if config is not None:
            override = self.override_of(config)
            key = override_entry(override, model) if override else None
            if key is not None:
                return Prices.per_mtok(override[key], base, f"provider:{config.name}:{key}")
        return base

    def priced(self, model: str, found: Prices | None) -> Prices | None:
        if found is not None:
            return found
        if model not in self.unpriced and len(self.unpriced) < _CACHE_LIMIT:
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

    # --- Redis failures ------------------------------------------------------------------

    def redis_failed(self, exc: BaseException, during: str) -> None:
        REDIS_ERRORS.inc()
        now = time.monotonic()
        self.down_until = now + self.settings.redis_retry_interval_seconds
        self.failing = True
        if now - self.last_warning >= _WARN_EVERY:
            self.last_warning = now
            log.warning(
                "budget_redis_unavailable policy=%s during=%s error=%s",
                self.settings.on_redis_error,
                during,
                str(exc) or type(exc).__name__,
            )

    def redis_ok(self) -> None:
        if self.failing:
            self.failing = False
            log.info("budget_redis_recovered")

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


_STATE: StashKey[_State] = StashKey("tollway-budgets.state")
_APP: StashKey[Quart] = StashKey("tollway-budgets.app")
_REQUEST: StashKey[_Request] = StashKey("tollway-budgets.request")


# --- start-up and lifecycle ---------------------------------------------------------------------


@hookimpl
def register_settings(register: Callable[[str, type[Any]], None]) -> None:
    register(NAME, BudgetSettings)


@hookimpl
def register_routes(app: Quart, gateway: Gateway) -> None:
    """Remember the app, to see at start-up whether an embedded control plane serves it."""
    gateway.stash[_APP] = app


def _control_plane_url(gateway: Gateway) -> str | None:
    base = os.environ.get("LW_GATEWAY_BASE_URL", "").strip().rstrip("/")
    if base:
        return base
    app = gateway.stash.get(_APP)
    if app is not None and any(
        rule.rule.startswith(_INTERNAL_PREFIX) for rule in app.url_map.iter_rules()
    ):
        return embedded_base_url(gateway.settings.server.addr)
    return None


def _embedded_ledger(gateway: Gateway) -> Any:
    """The in-process ledger an installed plugin offers (no HTTP to our own port), if any."""
    from tollway.ledger import ledger

    return ledger(gateway)


@hookimpl
async def gateway_started(gateway: Gateway) -> None:
    settings: BudgetSettings = gateway.settings.plugin(NAME)
    problems = settings.problems()
    unknown: Prices | None = None
    if settings.unknown_model_prices is not None:
        try:
            unknown = Prices.per_mtok(settings.unknown_model_prices, source="default")
        except PriceError as exc:
            problems.append(f"plugin.{NAME}.unknown_model_prices.{exc}")
    for i, provider in enumerate(gateway.settings.providers):
        try:
            parse_override(provider.config.get("prices"), f"providers[{i}].config.prices")
        except PriceError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    table = await asyncio.to_thread(PriceTable.packaged)
    store: LocalStore | RedisStore
    url = gateway.settings.redis_url
    if url:
        deadline = (
            settings.redis_connect_timeout_seconds + 2 * settings.redis_socket_timeout_seconds
        )
        store = RedisStore(connect(url, settings, gateway.settings.redis_cluster), deadline)
    else:
        store = LocalStore()
    base = _control_plane_url(gateway)
    client: ControlPlaneClient | LocalControlPlane | None = None
    outbox: Outbox | None = None
    node_id = f"{os.uname().nodename}:{os.getpid()}"
    if base is not None:
        local = (
            _embedded_ledger(gateway)
            if base == embedded_base_url(gateway.settings.server.addr)
            else None
        )
        if local is not None:
            client = LocalControlPlane(local, node_id)
            base = "embedded"
        else:
            secrets = load_gateway_secrets(gateway.settings.data_dir)
            client = ControlPlaneClient(base, secrets.internal, node_id)
        await client.start()
        outbox = Outbox(
            Path(gateway.settings.data_dir) / "budgets-outbox",
            client,
            interval=settings.outbox_flush_interval_seconds,
            batch_size=settings.outbox_batch_size,
        )
        await asyncio.to_thread(outbox.open)
        outbox.start()
    else:
        log.warning(
            "budgets_no_control_plane: LW_GATEWAY_BASE_URL is unset and no embedded control "
            "plane is installed; budgets are enforced from this gateway's counters only and no "
            "spend reaches a ledger"
        )
    state = _State(settings, table, store, client, outbox, node_id, unknown)
    gateway.stash[_STATE] = state
    if isinstance(store, RedisStore):
        try:
            await store.ping()
        except _BACKEND_ERRORS as exc:
            state.redis_failed(exc, "start-up")
    log.info(
        "budgets_ready counters=%s ledger=%s prices=%d",
        "redis" if state.redis else "memory",
        base or "off",
        len(table),
    )


@hookimpl
async def gateway_stopping(gateway: Gateway) -> None:
    state = gateway.stash.get(_STATE)
    if state is None:
        return
    if state.tasks:
        await asyncio.wait(list(state.tasks), timeout=2)
    if state.outbox is not None:
        await state.outbox.close(state.settings.outbox_drain_seconds)
    if state.client is not None:
        await state.client.close()
    if isinstance(state.store, RedisStore):
        with contextlib.suppress(Exception):
            await state.store.close()


@hookimpl
def readiness_checks(gateway: Gateway) -> dict[str, Callable[[], Any]] | None:
    state = gateway.stash.get(_STATE)
    if state is None or state.outbox is None:
        return None
    outbox = state.outbox
    stale_after = state.settings.outbox_stale_seconds

    def outbox_writer() -> str:
        age = outbox.oldest_age()
        if outbox.pending and age > stale_after:
            why = f" (last error: {outbox.last_error})" if outbox.last_error else ""
            return f"stale {len(outbox.pending)} entries, oldest {int(age)}s{why}"
        return "ok"

    return {"outbox_writer": outbox_writer}


# --- the estimate -------------------------------------------------------------------------------


def _requested_output(body: dict[str, Any]) -> int | None:
    for field in _MAX_TOKENS_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def estimate_micros(
    body_bytes: int,
    requested_output: int | None,
    prices: Prices | None,
    settings: BudgetSettings,
    *,
    embeddings: bool = False,
    recent_output: float | None = None,
) -> int:
    """The reservation for a request: its input at ``ceil(body bytes / 4)`` tokens plus an
    output estimate of ``min(max_tokens or output_estimate_default_tokens,
    output_estimate_cap_tokens)`` tokens (never ``max_tokens`` blindly), at the model's input
    and output prices, rounded once. ``recent_output`` (``recent_average`` mode) lowers the
    output estimate to 1.5 times the model's recent average."""
    if prices is None:
        return 0
    input_tokens = -(-body_bytes // 4)
    output = 0
    if not embeddings:
        output = min(
            requested_output
            if requested_output is not None
            else settings.output_estimate_default_tokens,
            settings.output_estimate_cap_tokens,
        )
        if recent_output is not None:
            output = min(output, math.ceil(recent_output * 1.5))
    i, o, _, _, d = prices.for_prompt(input_tokens).scaled
    return (2 * (input_tokens * i + output * o) + d) // (2 * d)  # rounded once, half up


def _chain_configs(ctx: RequestContext, principal: Principal) -> list[ProviderConfig]:
    return [p.config for p, _ in ctx.gateway.chain(principal, ctx.endpoint)]


def _estimate(ctx: RequestContext, state: _State, principal: Principal) -> int:
    model = ctx.model
    # tollway-model-access (trylast too) runs after this plugin and may still resolve an
    # alias: price the model the alias names.
    aliases = principal.config.get("model_aliases")
    if isinstance(aliases, Mapping):
        target = aliases.get(model)
        if isinstance(target, str) and target:
            model = target
    configs = _chain_configs(ctx, principal)
    found: Prices | None = None
    for config in configs:
        override = state.override_of(config)
        if override and override_entry(override, model) is not None:
            found = state.prices(model, config, config.type)
            break
    if found is None:
        for provider_type in dict.fromkeys([c.type for c in configs] or [""]):
            found = state.table.lookup(model, provider_type)
            if found is not None:
                break
    prices = state.priced(model, found)
    recent = None
    if state.settings.output_estimate == "recent_average":
        average = state.averages.get(model)
        if average is not None and average.samples >= _AVERAGE_MIN_SAMPLES:
            recent = average.value
    return estimate_micros(
        len(ctx.raw_body),
        _requested_output(ctx.body),
        prices,
        state.settings,
        embeddings=ctx.endpoint == "embeddings",
        recent_output=recent,
    )


# --- admission ----------------------------------------------------------------------------------


async def _seed(state: _State, counters: Sequence[Counter], *, reseed: bool) -> None:
    """Seed counters with the ledger's spend for their window plus this replica's entries not
    yet in the ledger; one seed per counter at a time (concurrent requests wait for it)."""
    loop = asyncio.get_running_loop()
    waits = [state.seeding[c.ident] for c in counters if c.ident in state.seeding]
    todo = [c for c in counters if c.ident not in state.seeding]
    if todo:
        future: asyncio.Future[None] = loop.create_future()
        for c in todo:
            state.seeding[c.ident] = future
        try:
            await _do_seed(state, todo, reseed=reseed)
        finally:
            future.set_result(None)
            for c in todo:
                if state.seeding.get(c.ident) is future:
                    del state.seeding[c.ident]
    for wait in waits:
        await asyncio.shield(wait)


async def _do_seed(state: _State, counters: Sequence[Counter], *, reseed: bool) -> None:
    outbox = state.outbox
    provisional = 0
    lock = outbox.lock if outbox is not None else contextlib.nullcontext()
    async with lock:  # no ledger batch half-way: an entry is pending or in the ledger, not both
        pending = [outbox.pending_sum(c.matches) if outbox is not None else 0 for c in counters]
        ledger = [0] * len(counters)
        if state.client is not None:
            try:
                ledger = await state.client.spend([c.spend_query() for c in counters])
            except ControlPlaneUnavailable as exc:
                provisional = time.time_ns() // 1_000_000 + round(
                    state.settings.seed_retry_seconds * 1000
                )
                now = time.monotonic()
                if now - state.last_seed_warning >= _WARN_EVERY:
                    state.last_seed_warning = now
                    log.warning(
                        "budget_seed_failed counters=%d error=%s: counting from this replica's "
                        "own unsent spend until the control plane answers",
                        len(counters),
                        exc,
                    )
        seeds = [a + b for a, b in zip(ledger, pending, strict=True)]
        if isinstance(state.store, LocalStore):
            state.store.seed(counters, seeds, provisional, reseed=reseed)
        else:
            await state.store.seed(counters, seeds, provisional, reseed=reseed)


async def _admit(
    state: _State, counters: list[Counter], amounts: list[int], request_id: str
) -> Admission | None:
    """One admission (seeding missing counters first); None: fail open (Redis down)."""
    store = state.store
    settings = state.settings
    ttl_ms = round(settings.reservation_ttl_seconds * 1000)
    retry_ms = round(settings.seed_retry_seconds * 1000)
    if isinstance(store, LocalStore):
        now_ms = time.time_ns() // 1_000_000
        if now_ms - state.last_purge > 60_000:
            state.last_purge = now_ms
            store.purge(now_ms)
        admission = store.admit(counters, amounts, request_id, now_ms, ttl_ms, retry_ms)
        if admission.status == "seed":
            await _seed(state, [counters[i] for i in admission.missing], reseed=False)
            admission = store.admit(counters, amounts, request_id, now_ms, ttl_ms, retry_ms)
    else:
        if time.monotonic() < state.down_until:
            _redis_down(state)
            return None
        try:
            admission = await store.admit(counters, amounts, request_id, None, ttl_ms, retry_ms)
            for _ in range(2):
                if admission.status != "seed":
                    break
                await _seed(state, [counters[i] for i in admission.missing], reseed=False)
                admission = await store.admit(counters, amounts, request_id, None, ttl_ms, retry_ms)
        except _BACKEND_ERRORS as exc:
            state.redis_failed(exc, "admission")
            _redis_down(state)
            return None
        state.redis_ok()
    if admission.status == "seed":
        return None  # counters keep vanishing (Redis evicting?): let it through
    if admission.reseed:
        state.spawn(_reseed(state, [counters[i] for i in admission.reseed]))
    return admission


async def _reseed(state: _State, counters: list[Counter]) -> None:
    try:
        await _seed(state, counters, reseed=True)
    except _BACKEND_ERRORS as exc:
        state.redis_failed(exc, "seed")


def _redis_down(state: _State) -> None:
    """Apply ``on_redis_error``: raise 503 (fail closed) or return (fail open)."""
    if state.settings.on_redis_error == "fail_closed":
        raise ServiceUnavailable(
            "the gateway's budget counters cannot reach Redis, and it is configured to refuse "
            "requests then (plugin.budgets.on_redis_error = fail_closed); retry shortly, or ask "
            "the operator to check GATEWAY_REDIS_URL",
            code="budget_counters_unavailable",
            retry_after=max(1.0, state.settings.redis_retry_interval_seconds),
        )


def _usd(micros: int) -> str:
    whole, frac = divmod(micros, 1_000_000)
    text = f"{whole}.{frac:06d}".rstrip("0")
    head, _, tail = text.partition(".")
    return f"${head}.{tail.ljust(2, '0')}"


def _percent(spent: int, limit: int) -> int:
    if limit <= 0:
        return 100 if spent >= 0 else 0
    return spent * 100 // limit


def _refusal(counter: Counter, spent: int, reserved: int, at_us: int) -> BudgetExceeded:
    budget = counter.budget
    named = f" {budget.name!r}" if budget.name else ""
    in_flight = f" (+{_usd(reserved)} reserved by calls in flight)" if reserved else ""
    until = counter.until_us
    if until is None:
        when = "it does not reset by itself (a total budget)"
        retry: float | None = None
    else:
        when = f"it resets at {format_us(until)[:19]}Z"
        retry = max(1.0, (until - at_us) / 1_000_000)
    subject = (
        f"end user {counter.scope_value!r}" if budget.scope_type == "end_user" else budget.scope_id
    )
    return BudgetExceeded(
        f"budget exceeded: {budget.label}{named} for {subject} has spent "
        f"{_usd(spent)}{in_flight} of its {_usd(budget.limit)} limit; {when}. Ask the operator "
        f"to raise it (tollway gateway-budgets update {budget.id} --limit USD)"
        + (
            "" if until is not None else f" or reset it (tollway gateway-budgets reset {budget.id})"
        ),
        code="budget_exceeded",
        retry_after=retry,
    )


@hookimpl(trylast=True)
async def admit(ctx: RequestContext) -> None:
    """Budget precheck and reservation (after every other admission check)."""
    principal = ctx.principal
    if principal is None:
        return
    raw = principal.extras.get("budgets")
    if not raw:
        return
    state: _State | None = ctx.gateway.stash.get(_STATE)
    if state is None:
        return
    budgets = state.budgets_of(principal, raw)
    if not budgets:
        return
    end_user = end_user_of(ctx) if any(b.scope_type == "end_user" for b in budgets) else None
    at_us = ctx.started_unix_ns // 1000
    grace_ms = round(state.settings.reservation_ttl_seconds * 1000) + 3_600_000
    counters = counters_for(
        budgets, principal, end_user, at_us, state.settings.redis_key_prefix, grace_ms
    )
    if not counters:
        return
    estimate = _estimate(ctx, state, principal)
    amounts = [estimate] * len(counters)
    # Recorded before the round trip: if the client leaves while it runs, `account` (which
    # always runs) releases whatever the script reserved.
    request = _Request(counters, amounts)
    ctx.stash[_REQUEST] = request
    admission = await _admit(state, counters, amounts, ctx.request_id)
    if admission is None or admission.status != "ok":
        request.counters = []  # nothing was reserved
    if admission is None:
        ctx.span_attributes[DECISION] = "fail_open"
        return
    threshold = state.settings.warn_percent
    if admission.status == "blocked":
        counter = counters[admission.index]
        spent, reserved = admission.spent[0], admission.reserved[0]
        BLOCKS.labels(counter.budget.scope_type).inc()
        pct = _percent(spent + reserved, counter.budget.limit)
        ctx.response_headers[WARNING_HEADER] = f"{counter.budget.scope_type}:{pct}"
        ctx.span_attributes[DECISION] = "block"
        ctx.span_attributes["langwatch.budget.scope"] = counter.budget.label
        ctx.span_attributes["langwatch.budget.id"] = counter.budget.id
        raise _refusal(counter, spent, reserved, at_us)
    warnings = []
    warned: list[str] = []
    for counter, spent, reserved in zip(counters, admission.spent, admission.reserved, strict=True):
        pct = _percent(spent + reserved, counter.budget.limit)
        if pct >= threshold:
            warnings.append(f"{counter.budget.scope_type}:{pct}")
            warned.append(counter.budget.id)
    if warnings:
        ctx.response_headers[WARNING_HEADER] = ",".join(warnings)
        ctx.span_attributes[DECISION] = "warn"
        ctx.span_attributes["langwatch.budget.id"] = ",".join(warned)
    else:
        ctx.span_attributes[DECISION] = "allow"


# --- recording and settlement -------------------------------------------------------------------


def _served_by(ctx: RequestContext) -> Any:
    for attempt in reversed(ctx.attempts):
        if attempt.outcome == "ok":
            return attempt
    return None


def _billable(ctx: RequestContext, request: _Request | None) -> tuple[Usage | None, bool]:
    """The usage to bill, and whether it was estimated: a stream cut (client gone, upstream
    failure, stream guardrail) before its final usage is billed for what was produced — the
    events relayed count as output tokens when the provider had not reported more."""
    usage = ctx.usage
    if not ctx.stream or (request is not None and request.terminal_seen):
        return usage, False
    cut = ctx.client_disconnected or ctx.terminated_at_chunk is not None
    if not cut or ctx.stream_chunks <= 0:
        return usage, False
    if ctx.response_headers.get("X-LangWatch-Cache") == "hit":
        return usage, False  # a replay from the response cache cost nothing upstream
    produced = ctx.stream_chunks
    if usage is None:
        return Usage(input_tokens=-(-len(ctx.body_bytes()) // 4), output_tokens=produced), True
    if usage.output_tokens < produced:
        return attrs.evolve(usage, output_tokens=produced), True
    return usage, False


def _record(
    ctx: RequestContext, state: _State, request: _Request | None, status: int | None
) -> int:
    """Compute the call's cost and spool its ledger entry (once). Returns the cost."""
    if request is not None and request.cost is not None:
        return request.cost
    attempt = _served_by(ctx)
    usage, estimated = _billable(ctx, request) if attempt is not None else (None, False)
    if attempt is None or usage is None:
        cost = 0
    else:
        instance = ctx.gateway.instances.get(attempt.provider)
        config = instance.config if instance is not None else None
        model = attempt.model or ctx.resolved_model or ctx.model
        found = state.prices(model, config, attempt.provider_type)
        prices = state.priced(model, found)
        cost = 0 if prices is None else cost_micros(usage, prices)
        principal = ctx.principal
        if state.outbox is not None and principal is not None:
            at_us = ctx.started_unix_ns // 1000
            state.outbox.record(
                {
                    "request_id": ctx.request_id,
                    "created_at": format_us(at_us),
                    "organization_id": principal.organization_id,
                    "team_id": principal.team_id,
                    "project_id": principal.project_id,
                    "vk_id": principal.key_id,
                    "principal_id": principal.principal_id,
                    "end_user_id": end_user_of(ctx),
                    "provider_id": attempt.provider,
                    "model": model,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_input_tokens": usage.cache_read_input_tokens,
                    "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                    "reasoning_tokens": usage.reasoning_tokens,
                    "cost_micro_usd": cost,
                    "status": status,
                    "usage_estimated": estimated,
                },
                at_us,
            )
        if not estimated and state.settings.output_estimate == "recent_average":
            average = state.averages.get(model)
            if average is None and len(state.averages) < _CACHE_LIMIT:
                average = state.averages[model] = _Average()
            if average is not None:
                average.add(billed_output_tokens(usage))
    if request is None:
        request = _Request()
        ctx.stash[_REQUEST] = request
    request.cost = cost
    request.spooled = True
    ctx.cost_micros = cost
    return cost


@hookimpl
def post_guardrail(ctx: RequestContext, response: ResponseView) -> None:
    """A complete non-streaming answer, before the client sees it: spool its ledger entry."""
    state: _State | None = ctx.gateway.stash.get(_STATE)
    if state is not None and ctx.usage is not None and ctx.principal is not None:
        _record(ctx, state, ctx.stash.get(_REQUEST), response.status)
    return None


@hookimpl
def on_stream_chunk(ctx: RequestContext, chunk: bytearray) -> None:
    """The chunk that ends a stream, before the client sees it: spool its ledger entry."""
    if ctx.usage is None:
        return None
    terminal = _TERMINAL.get(ctx.endpoint)
    if terminal is None or not _ends_stream(chunk, terminal):
        return None
    state: _State | None = ctx.gateway.stash.get(_STATE)
    if state is None or ctx.principal is None:
        return None
    request = ctx.stash.get(_REQUEST)
    if request is None:
        request = _Request()
        ctx.stash[_REQUEST] = request
    if request.cost is None:
        request.terminal_seen = True
        _record(ctx, state, request, ctx.status)
    return None


@hookimpl(tryfirst=True)
async def account(ctx: RequestContext) -> None:
    """Record the call (if not yet) and settle its reservations to the actual cost."""
    state: _State | None = ctx.gateway.stash.get(_STATE)
    if state is None:
        return
    request = ctx.stash.get(_REQUEST)
    cost = _record(ctx, state, request, ctx.status)
    if cost:
        ctx.span_attributes["langwatch.cost_usd"] = cost / 1_000_000
    request = ctx.stash.get(_REQUEST)
    if request is None or not request.counters:
        return
    costs = [cost] * len(request.counters)
    store = state.store
    if isinstance(store, LocalStore):
        store.settle([c.ident for c in request.counters], ctx.request_id, costs)
        return
    if time.monotonic() < state.down_until:
        return  # the reservation expires; the ledger has the cost
    try:
        await store.settle(
            [(c.hash_key, c.zset_key) for c in request.counters], ctx.request_id, costs
        )
    except _BACKEND_ERRORS as exc:
        state.redis_failed(exc, "settlement")
        return
    state.redis_ok()


def window_of(budget: Budget, at_us: int) -> tuple[int, int | None]:
    """The ``[start, end)`` (epoch µs) of ``budget``'s window containing ``at_us``."""
    return window_bounds(budget.window, at_us)
