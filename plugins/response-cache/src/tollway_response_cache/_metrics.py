"""Prometheus counters (default registry, so any ``/metrics`` endpoint exports them)."""

from __future__ import annotations

from tollway.metrics import counter

__all__ = ["COALESCED", "OUTCOMES", "REDIS_ERRORS"]

#: Requests of cache-enabled keys, by ``X-LangWatch-Cache`` outcome (hit, miss, bypass, force).
OUTCOMES = counter(
    "gateway_cache_hits",
    "Response-cache outcomes of requests whose key has response_cache on (hit, miss, bypass, "
    "force)",
    ("outcome",),
)
#: Hits served by waiting for a concurrent identical request (single-flight).
COALESCED = counter(
    "gateway_response_cache_coalesced",
    "Requests answered by waiting for a concurrent identical request instead of the upstream",
)
#: Redis errors met by the response cache (the request went upstream uncached).
REDIS_ERRORS = counter(
    "gateway_response_cache_redis_errors",
    "Redis errors met by the response cache (the cache was skipped, the request served)",
)
