"""Prometheus metrics (default registry, so any ``/metrics`` endpoint exports them)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

__all__ = ["BLOCKS", "REDIS_ERRORS"]


def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
    """Create a counter, or reuse the one already registered under ``name`` (the module may be
    imported more than once in one process, e.g. by tests that reload plugins)."""
    try:
        return Counter(name, documentation, labels)
    except ValueError:
        existing = REGISTRY._names_to_collectors.get(name)
        if isinstance(existing, Counter):
            return existing
        raise


#: Requests refused with 402 by a ``block`` budget, by the budget's scope type.
BLOCKS = _counter(
    "gateway_budget_blocks_total",
    "Requests refused with 402 budget_exceeded, by budget scope "
    "(organization, team, project, virtual_key, principal, end_user)",
    ("scope",),
)
#: Redis errors met by the budget counters (each applied on_redis_error).
REDIS_ERRORS = _counter(
    "gateway_budget_redis_errors_total",
    "Redis errors met by the budget counters (the request was failed open or closed)",
)
