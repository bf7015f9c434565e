"""``gateway_auth_cache_hits_total{tier}`` in prometheus_client's default registry."""

from __future__ import annotations

from typing import Any

from tollway.metrics import counter

__all__ = ["HITS", "hit_counter"]

HITS = counter(
    "gateway_auth_cache_hits",
    "Virtual-key authentications by the cache tier that answered: l1 (in-process), "
    "l2 (Redis) or miss (the control plane was asked)",
    ["tier"],
)


def hit_counter(tier: str) -> Any:
    """The pre-bound child for ``tier`` (``l1``, ``l2`` or ``miss``)."""
    return HITS.labels(tier=tier)
