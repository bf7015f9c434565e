"""Anthropic prompt-caching control per virtual key (SPEC §6 "Caching passthrough").

The key config's ``cache``::

    {"cache": {"mode": "respect"}}                 # default: the client's markers, untouched
    {"cache": {"mode": "disable"}}                 # strip every cache_control before upstream
    {"cache": {"mode": "force", "ttl_s": 3600}}    # add breakpoints (1-hour TTL when ttl_s ≥ 3600)

is applied in the ``admit`` hook (after rate limits, policy rules and model access; before
budgets), on ``POST /v1/messages``. ``disable`` also strips the ``cache_control`` of OpenAI chat
bodies' content parts (``POST /v1/chat/completions``), which the chat → Anthropic translation
would carry upstream; ``force`` is Messages-only, since a marker added to a chat body would
reach an OpenAI upstream as an unknown field. The body is re-serialised only when it changes:
``respect`` (or no ``cache`` at all) costs one dict lookup and forwards the client's bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tollway import RequestContext, ServiceUnavailable, hookimpl
from tollway_cache_passthrough._rewrite import (
    MAX_BREAKPOINTS,
    count_markers,
    force_messages,
    iter_markers,
    strip_chat,
    strip_messages,
)

__all__ = [
    "MAX_BREAKPOINTS",
    "MODES",
    "ONE_HOUR_TTL_S",
    "count_markers",
    "force_messages",
    "iter_markers",
    "strip_chat",
    "strip_messages",
    "validate_config",
]

log = logging.getLogger("tollway.cache_passthrough")

MODES = ("respect", "disable", "force")
#: ``ttl_s`` at or above this gives forced markers ``"ttl": "1h"``; below it they carry no
#: ``ttl`` (Anthropic's 5-minute default). Anthropic offers exactly these two lifetimes.
ONE_HOUR_TTL_S = 3600

# The core's endpoint names (tollway._context.MESSAGES / CHAT).
_MESSAGES = "messages"
_CHAT = "chat"
_MARKER = b"cache_control"


def validate_config(config: Mapping[str, Any]) -> list[str]:
    """Problems with a key config's ``cache`` section, one line each with its JSON path (for
    write-time validation; an empty list means valid)."""
    cache = config.get("cache")
    if cache is None:
        return []
    if not isinstance(cache, Mapping):
        return ['cache: must be an object like {"mode": "respect"}']
    problems = []
    for key in cache:
        if key not in ("mode", "ttl_s"):
            problems.append(f"cache.{key}: unknown field (known: mode, ttl_s)")
    mode = cache.get("mode", "respect")
    if mode not in MODES:
        problems.append(f"cache.mode: {mode!r} is not one of {', '.join(MODES)}")
    ttl = cache.get("ttl_s")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        problems.append(f"cache.ttl_s: {ttl!r} must be a positive number of seconds")
    return problems


def _invalid(principal_id: str, problem: str) -> ServiceUnavailable:
    log.warning("cache_config_invalid key=%s problem=%s", principal_id, problem)
    return ServiceUnavailable(
        f"this key's cache configuration is invalid ({problem}); fix it with `tollway "
        'virtual-keys update <id> --config-json \'{"cache": {"mode": "respect"}}\'`',
        code="key_config_invalid",
        retry_after=120,
    )


@hookimpl(phase="request")
def admit(ctx: RequestContext) -> None:
    """Apply the key's ``cache.mode`` to the request body (see the module docstring)."""
    principal = ctx.principal
    if principal is None:
        return
    cache = principal.config.get("cache")
    if cache is None:
        return
    if not isinstance(cache, Mapping):
        raise _invalid(principal.key_id, "cache: must be an object")
    mode = cache.get("mode", "respect")
    if mode == "respect":
        return
    if mode == "disable":
        endpoint = ctx.endpoint
        if endpoint != _MESSAGES and endpoint != _CHAT:
            return
        # The client's bytes without the word cannot hold a marker (unless a hook before us
        # rewrote the body).
        if not ctx.body_modified and _MARKER not in ctx.raw_body:
            return
        new = strip_messages(ctx.body) if endpoint == _MESSAGES else strip_chat(ctx.body)
        if new is not None:
            ctx.set_body(new)
        return
    if mode == "force":
        ttl = cache.get("ttl_s")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0
        ):
            raise _invalid(principal.key_id, f"cache.ttl_s: {ttl!r} is not a positive number")
        if ctx.endpoint != _MESSAGES:
            return
        new = force_messages(ctx.body, one_hour=ttl is not None and ttl >= ONE_HOUR_TTL_S)
        if new is not None:
            ctx.set_body(new)
        return
    raise _invalid(principal.key_id, f"cache.mode: {mode!r} is not one of {', '.join(MODES)}")
