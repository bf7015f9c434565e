"""Prometheus counters (default registry, so any ``/metrics`` endpoint exports them)."""

from __future__ import annotations

from tollway.metrics import counter

__all__ = ["DENIED", "PROVIDER_SKIPS", "REDIS_ERRORS"]

#: Requests refused with 429 by a gateway rate limit (key, or every provider limited).
DENIED = counter(
    "gateway_rate_limit_denied_total",
    "Requests refused with 429 by a gateway rate limit, by dimension (rpm, rpd, tpm)",
    ("dimension",),
)
#: Provider attempts skipped because that provider's gateway-side limit was reached.
PROVIDER_SKIPS = counter(
    "gateway_rate_limit_provider_skips_total",
    "Provider attempts skipped because the provider's gateway rate limit was reached",
    ("provider", "dimension"),
)
#: Redis errors met by the rate limiter (each one applied on_redis_error).
REDIS_ERRORS = counter(
    "gateway_rate_limit_redis_errors_total",
    "Redis errors met by the rate limiter (the request was failed open or closed)",
)
