"""Prometheus metrics (default registry, so any ``/metrics`` endpoint exports them)."""

from __future__ import annotations

from tollway.metrics import counter

__all__ = ["BLOCKS", "REDIS_ERRORS"]

#: Requests refused with 402 by a ``block`` budget, by the budget's scope type.
BLOCKS = counter(
    "gateway_budget_blocks_total",
    "Requests refused with 402 budget_exceeded, by budget scope "
    "(organization, team, project, virtual_key, principal, end_user)",
    ("scope",),
)
#: Redis errors met by the budget counters (each applied on_redis_error).
REDIS_ERRORS = counter(
    "gateway_budget_redis_errors_total",
    "Redis errors met by the budget counters (the request was failed open or closed)",
)
