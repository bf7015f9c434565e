"""Prometheus counters (default registry, so any ``/metrics`` endpoint exports them)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

__all__ = ["COALESCED", "OUTCOMES", "REDIS_ERRORS"]


def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
    """Create a counter, or reuse the one already registered under ``name``."""
    try:
        return Counter(name, documentation, labels)
    except ValueError:
        existing = REGISTRY._names_to_collectors.get(name)
        if isinstance(existing, Counter):
            return existing
        raise


#: Requests of cache-enabled keys, by ``X-LangWatch-Cache`` outcome (hit, miss, bypass, force).
OUTCOMES = _counter(
    "gateway_cache_hits",
    "Response-cache outcomes of requests whose key has response_cache on (hit, miss, bypass, "
    "force)",
    ("outcome",),
)
#: Hits served by waiting for a concurrent identical request (single-flight).
COALESCED = _counter(
    "gateway_response_cache_coalesced",
    "Requests answered by waiting for a concurrent identical request instead of the upstream",
)
#: Redis errors met by the response cache (the request went upstream uncached).
REDIS_ERRORS = _counter(
    "gateway_response_cache_redis_errors",
    "Redis errors met by the response cache (the cache was skipped, the request served)",
)
