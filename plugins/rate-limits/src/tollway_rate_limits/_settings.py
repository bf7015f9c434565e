"""``[plugin.tollway-rate-limits]``: the plugin's settings."""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["NAME", "RateLimitSettings"]

NAME = "tollway-rate-limits"


@attrs.frozen
class RateLimitSettings:
    """Every field has a default, so an absent section means "the defaults"."""

    #: What a request meets while Redis is unreachable: ``fail_open`` admits it without a
    #: limit (and logs ``rate_limit_redis_unavailable``); ``fail_closed`` answers 503.
    on_redis_error: Literal["fail_open", "fail_closed"] = "fail_open"
    #: Bounds on every Redis round trip: a read, and a new connection.
    redis_socket_timeout_seconds: float = 0.25
    redis_connect_timeout_seconds: float = 0.5
    redis_max_connections: int = 64
    #: After a Redis error, the rate limiter skips Redis (applying ``on_redis_error`` at once)
    #: for this long, so a dead Redis costs one timeout per interval, not one per request.
    redis_retry_interval_seconds: float = 1.0
    #: ``GATEWAY_REDIS_URL`` names a Redis Cluster.
    redis_cluster: bool = False
    #: Prefix of every Redis key (``<prefix>:{org:<id>}:vk:<key id>:rpm``).
    key_prefix: str = "tollway:rl"
    #: Length of the ``rpm`` / ``tpm`` sliding window. 60 is what the names mean; change it
    #: only for tests or deliberate experiments.
    window_seconds: float = 60.0
    #: Output tokens assumed for a ``tpm`` pre-check when the body sets no ``max_tokens`` /
    #: ``max_completion_tokens`` / ``max_output_tokens`` (capped at the tpm limit itself).
    default_output_tokens: int = 1024
    #: Send ``x-ratelimit-*`` headers on admitted requests.
    response_headers: bool = True

    def problems(self) -> list[str]:
        """What is wrong with these values, one line per problem, named by path."""
        out = []
        where = f"plugin.{NAME}"
        for field in (
            "redis_socket_timeout_seconds",
            "redis_connect_timeout_seconds",
            "window_seconds",
        ):
            if getattr(self, field) <= 0:
                out.append(f"{where}.{field}: must be > 0")
        if self.redis_retry_interval_seconds < 0:
            out.append(f"{where}.redis_retry_interval_seconds: must be >= 0")
        if self.redis_max_connections < 1:
            out.append(f"{where}.redis_max_connections: must be >= 1")
        if self.default_output_tokens < 0:
            out.append(f"{where}.default_output_tokens: must be >= 0")
        if not self.key_prefix or any(c in self.key_prefix for c in "{} "):
            out.append(f"{where}.key_prefix: must be non-empty, without braces or spaces")
        return out
