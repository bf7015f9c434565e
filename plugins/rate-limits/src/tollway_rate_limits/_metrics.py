"""Prometheus counters (default registry, so any ``/metrics`` endpoint exports them)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

__all__ = ["DENIED", "PROVIDER_SKIPS", "REDIS_ERRORS"]


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


#: Requests refused with 429 by a gateway rate limit (key, or every provider limited).
DENIED = _counter(
    "gateway_rate_limit_denied_total",
    "Requests refused with 429 by a gateway rate limit, by dimension (rpm, rpd, tpm)",
    ("dimension",),
)
#: Provider attempts skipped because that provider's gateway-side limit was reached.
PROVIDER_SKIPS = _counter(
    "gateway_rate_limit_provider_skips_total",
    "Provider attempts skipped because the provider's gateway rate limit was reached",
    ("provider", "dimension"),
)
#: Redis errors met by the rate limiter (each one applied on_redis_error).
REDIS_ERRORS = _counter(
    "gateway_rate_limit_redis_errors_total",
    "Redis errors met by the rate limiter (the request was failed open or closed)",
)
