"""Tollway rate limits (SPEC §4): per virtual key and per model provider, ``rpm`` / ``rpd`` /
``tpm``, cluster-wide through Redis (one Lua script per admission decision) or in process.

* ``admit`` (``tryfirst``): the key's ``rate_limits`` from ``ctx.principal.config``;
* ``before_attempt``: the provider credential's ``rpm`` / ``tpm`` / ``rpd`` (a refusal skips
  that provider, so the chain falls back);
* ``account``: settles ``tpm`` reservations with the actual usage.

See ``docs/plugins/rate-limits.md``.
"""

from __future__ import annotations

from tollway_rate_limits._limits import Limits, TokenEstimate, estimate_tokens, parse_limits
from tollway_rate_limits._plugin import (
    account,
    admit,
    before_attempt,
    gateway_started,
    gateway_stopping,
    readiness_checks,
    register_settings,
)
from tollway_rate_limits._settings import NAME, RateLimitSettings
from tollway_rate_limits._window import Decision, LocalStore, Spec

__all__ = [
    "NAME",
    "Decision",
    "Limits",
    "LocalStore",
    "RateLimitSettings",
    "Spec",
    "TokenEstimate",
    "account",
    "admit",
    "before_attempt",
    "estimate_tokens",
    "gateway_started",
    "gateway_stopping",
    "parse_limits",
    "readiness_checks",
    "register_settings",
]
