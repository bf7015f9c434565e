"""``[plugin.budgets]``: the plugin's settings (every field has a default)."""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = ["NAME", "BudgetSettings"]

NAME = "budgets"


@attrs.frozen
class BudgetSettings:
    """See docs/plugins/budgets.md for what each one changes."""

    # --- the reservation estimate --------------------------------------------------------
    #: Output tokens reserved at most, whatever ``max_tokens`` the request asks for (Claude
    #: Code sends 128000): the reservation is an estimate, the settlement is exact.
    output_estimate_cap_tokens: int = 4096
    #: Output tokens reserved for a request that sets no ``max_tokens``: the model's max
    #: output from the price table when known, never more than this (this when unknown).
    #: A budget may set its own (``default_max_output_tokens`` in the budget). Capped as above.
    default_max_output_tokens: int = 4096
    #: Deprecated: the fixed estimate for requests without ``max_tokens`` before
    #: ``default_max_output_tokens``; when set, it is used as ``default_max_output_tokens``.
    output_estimate_default_tokens: int | None = None
    #: ``capped``: min(max_tokens or the default, the cap). ``recent_average``: additionally
    #: no more than 1.5 times the model's recent average output on this replica (once known) —
    #: smaller reservations, a larger possible overshoot (see the docs' overspend bound).
    output_estimate: Literal["capped", "recent_average"] = "capped"
    #: Without Redis: a reservation whose request never settles expires after this. With
    #: Redis: the longest a replica renews a reservation's lease, and retries a settlement
    #: that keeps failing (set it above your longest streams).
    reservation_ttl_seconds: float = 900.0
    #: With Redis: each replica renews its in-flight reservations' leases every third of this
    #: (its heartbeat); a replica that died stops, and its reservations are reclaimed by the
    #: next admission on their counters within this long (billed at the reservation in the
    #: ledger, marked ``usage_estimated``).
    reservation_lease_seconds: float = 10.0

    # --- warnings ------------------------------------------------------------------------
    #: ``X-LangWatch-Budget-Warning`` from this share of a budget on (percent).
    warn_percent: int = 80

    # --- prices --------------------------------------------------------------------------
    #: Prices for models neither the price table nor the provider's ``config.prices`` know
    #: (``{ input_per_mtok = …, output_per_mtok = … }``, USD per million tokens). Unset:
    #: such calls cost 0 and ``budget_price_unknown`` is logged (once per model).
    unknown_model_prices: dict[str, Any] | None = None

    # --- Redis ---------------------------------------------------------------------------
    #: Prefix of every Redis key (``<prefix>:{org:<id>}:b:<budget>:<window start>:c``).
    redis_key_prefix: str = "tollway:budget"
    redis_socket_timeout_seconds: float = 0.25
    redis_connect_timeout_seconds: float = 0.5
    redis_max_connections: int = 64
    #: What an admission meets while Redis is unreachable: ``fail_open`` admits without a
    #: budget check (logged ``budget_redis_unavailable``; spend still reaches the ledger);
    #: ``fail_closed`` answers 503.
    on_redis_error: Literal["fail_open", "fail_closed"] = "fail_open"
    #: After a Redis error, skip Redis this long (one timeout per interval, not per request).
    redis_retry_interval_seconds: float = 1.0

    # --- the ledger outbox ---------------------------------------------------------------
    #: How often the outbox fsyncs its spool and sends what is pending to the control plane.
    outbox_flush_interval_seconds: float = 0.2
    #: Entries per ledger batch.
    outbox_batch_size: int = 500
    #: ``/readyz`` reports ``outbox_writer: stale …`` once the oldest unsent entry is older.
    outbox_stale_seconds: float = 60.0
    #: At shutdown, try this long to hand what is pending to the control plane (the rest
    #: stays in the spool for the next start).
    outbox_drain_seconds: float = 5.0
    #: A counter the control plane could not seed (unreachable) starts from what this replica
    #: knows and is seeded again after this long.
    seed_retry_seconds: float = 30.0

    @property
    def no_max_tokens_output(self) -> int:
        """The most output tokens reserved for a request without ``max_tokens`` (before the
        model's own max output and ``output_estimate_cap_tokens``)."""
        if self.output_estimate_default_tokens is not None:
            return self.output_estimate_default_tokens
        return self.default_max_output_tokens

    def problems(self) -> list[str]:
        """What is wrong with these values, one ``plugin.budgets.<field>: …`` line each."""
        where = f"plugin.{NAME}"
        out = []
        for field in (
            "reservation_ttl_seconds",
            "reservation_lease_seconds",
            "redis_socket_timeout_seconds",
            "redis_connect_timeout_seconds",
            "outbox_flush_interval_seconds",
            "outbox_stale_seconds",
            "seed_retry_seconds",
        ):
            if getattr(self, field) <= 0:
                out.append(f"{where}.{field}: must be > 0")
        for field in (
            "output_estimate_cap_tokens",
            "default_max_output_tokens",
            "output_estimate_default_tokens",
        ):
            value = getattr(self, field)
            if value is not None and value < 0:
                out.append(f"{where}.{field}: must be >= 0")
        if not 0 < self.warn_percent <= 100:
            out.append(f"{where}.warn_percent: must be between 1 and 100")
        if self.outbox_batch_size < 1 or self.outbox_batch_size > 2000:
            out.append(f"{where}.outbox_batch_size: must be between 1 and 2000")
        if self.redis_max_connections < 1:
            out.append(f"{where}.redis_max_connections: must be >= 1")
        if self.redis_retry_interval_seconds < 0 or self.outbox_drain_seconds < 0:
            out.append(f"{where}: redis_retry_interval_seconds and outbox_drain_seconds >= 0")
        if not self.redis_key_prefix or any(c in self.redis_key_prefix for c in "{} "):
            out.append(f"{where}.redis_key_prefix: must be non-empty, without braces or spaces")
        return out
