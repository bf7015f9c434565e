"""The auth cache's settings: environment variables, read once when the gateway starts.

Durations use Go's syntax (``30s``, ``5m``, ``6h``, ``1h30m``, ``250ms``), as the reference
product's ``LW_GATEWAY_AUTH_CACHE_*`` variables do; the reference's newer ``…_SECONDS`` names take
plain seconds, where a negative value disables. An unparseable value stops start-up with a message
naming the variable.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

__all__ = [
    "SettingsError",
    "VKAuthSettings",
    "embedded_base_url",
    "format_duration",
    "parse_duration",
]

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN, as Go accepts
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class SettingsError(ValueError):
    """A setting that does not parse; the message names the variable and says what to write."""


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (``"1h30m"``, ``"250ms"``, ``"-5s"``, ``"0"``) into seconds.

    Raises :class:`ValueError` for anything Go's ``time.ParseDuration`` would refuse (a missing
    unit, an unknown unit, spaces, an empty string).
    """
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Seconds as a Go-style duration (``5400`` → ``"1h30m"``); inverse of
    :func:`parse_duration` for whole seconds."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    rest = abs(seconds)
    whole = math.floor(rest)
    frac = rest - whole
    h, rem = divmod(int(whole), 3600)
    m, s = divmod(rem, 60)
    out = ""
    if h:
        out += f"{h}h"
    if m:
        out += f"{m}m"
    if s or frac or not out:
        out += f"{s + frac:g}s"
    return sign + out


def _duration_var(env: Mapping[str, str], name: str, default: float) -> tuple[float, bool]:
    """The value of a Go-duration variable ``name`` and of its ``name_SECONDS`` twin.

    Returns (seconds, was_set). Both set to different values is refused.
    """
    raw = env.get(name, "").strip()
    raw_seconds = env.get(f"{name}_SECONDS", "").strip()
    value: float | None = None
    if raw:
        try:
            value = parse_duration(raw)
        except ValueError:
            raise SettingsError(
                f"{name}={raw!r} is not a duration; write it like 30s, 5m, 6h or 1h30m "
                f"(or set {name}_SECONDS to a number of seconds)"
            ) from None
    if raw_seconds:
        try:
            seconds = float(raw_seconds)
            if not math.isfinite(seconds):
                raise ValueError
        except ValueError:
            raise SettingsError(
                f"{name}_SECONDS={raw_seconds!r} is not a number of seconds; write e.g. 300 "
                f"(negative disables), or set {name} to a duration like 5m"
            ) from None
        if value is not None and value != seconds:
            raise SettingsError(
                f"{name}={raw!r} and {name}_SECONDS={raw_seconds!r} disagree; set only one of them"
            )
        value = seconds
    if value is None:
        return default, False
    return value, True


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r} must be at least 1")
    return value


def embedded_base_url(addr: str) -> str:
    """The gateway's own address as a URL it can call itself on (embedded control plane).

    ``:5563`` and ``0.0.0.0:5563`` → ``http://127.0.0.1:5563``; ``[::]:5563`` →
    ``http://[::1]:5563``; a specific host is kept.
    """
    host, _, port = addr.strip().rpartition(":")
    if not port.isdigit():
        raise SettingsError(f"SERVER_ADDR {addr!r} must look like ':5563' or 'host:5563'")
    host = host.strip()
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::", "[::0]"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


@attrs.frozen
class VKAuthSettings:
    """Everything the plugin reads from the environment (see docs/plugins/vk-auth.md)."""

    #: The control plane's base URL; None → the gateway's own address (embedded control plane).
    base_url: str | None = None
    #: How long a fetched bundle is fresh (never past its JWT's ``exp``).
    soft_ttl: float = 60.0
    #: How far a failed refresh (control plane unreachable) pushes ``soft_expires_at``.
    soft_bump: float = 300.0
    #: How long after the last successful refresh a key may be served stale; <= 0 disables.
    hard_grace: float = 6 * 3600.0
    #: Entries in the in-process L1 LRU.
    l1_size: int = 10_000
    #: Redis key prefix of the L2 tier.
    redis_prefix: str = "tollway:vkauth:"
    #: Seconds an ``unknown_key``/``revoked``/… answer is remembered (flushed by the feed).
    negative_ttl: float = 5.0
    #: The change feed's long-poll window (0..30 s).
    feed_timeout: int = 25
    #: Whether GATEWAY_REDIS_CLUSTER asks for a Redis Cluster client.
    redis_cluster: bool = False
    #: ``GATEWAY_CACHE_BOOTSTRAP_ALL_KEYS``: warm L1 with every active key at start.
    bootstrap_all_keys: bool = False
    #: At most this many keys are warmed (never more than the L1 holds).
    bootstrap_max_keys: int = 10_000
    #: The bootstrap gives up after this long; readiness waits for it at most that long.
    bootstrap_timeout: float = 10.0

    @property
    def stale_serving(self) -> bool:
        """Whether a cached key keeps working while the control plane is unreachable."""
        return self.hard_grace > 0 and self.soft_bump > 0

    @property
    def l2_ttl(self) -> int:
        """Redis TTL of an L2 entry: it must outlive the hard grace so a new replica can serve
        a key while the control plane is down."""
        keep = max(self.soft_ttl, self.hard_grace if self.stale_serving else 0.0)
        return max(1, math.ceil(keep))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VKAuthSettings:
        """Read the ``LW_GATEWAY_*`` variables; raise :class:`SettingsError` naming a bad one."""
        env = os.environ if env is None else env
        base = env.get("LW_GATEWAY_BASE_URL", "").strip().rstrip("/") or None
        if base is not None:
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(
                    f"LW_GATEWAY_BASE_URL={base!r} is not an http(s) URL; set it to the control "
                    "plane's address, e.g. http://control-plane:5560"
                )
        soft_ttl, _ = _duration_var(env, "LW_GATEWAY_AUTH_CACHE_SOFT_TTL", 60.0)
        if soft_ttl <= 0:
            raise SettingsError(
                "LW_GATEWAY_AUTH_CACHE_SOFT_TTL must be positive (how long a fetched key stays "
                "fresh, e.g. 60s)"
            )
        soft_bump, _ = _duration_var(env, "LW_GATEWAY_AUTH_CACHE_SOFT_BUMP", 300.0)
        hard_grace, _ = _duration_var(env, "LW_GATEWAY_AUTH_CACHE_HARD_GRACE", 6 * 3600.0)
        negative_ttl, _ = _duration_var(env, "LW_GATEWAY_AUTH_CACHE_NEGATIVE_TTL", 5.0)
        prefix = env.get("LW_GATEWAY_AUTH_CACHE_REDIS_PREFIX", "").strip() or "tollway:vkauth:"
        cluster = env.get("GATEWAY_REDIS_CLUSTER", "").strip().lower() in ("1", "true", "yes")
        bootstrap = env.get("GATEWAY_CACHE_BOOTSTRAP_ALL_KEYS", "").strip().lower()
        if bootstrap not in ("", "1", "true", "yes", "on", "0", "false", "no", "off"):
            raise SettingsError(
                f"GATEWAY_CACHE_BOOTSTRAP_ALL_KEYS={bootstrap!r} must be true or false"
            )
        bootstrap_timeout, _ = _duration_var(env, "GATEWAY_CACHE_BOOTSTRAP_TIMEOUT", 10.0)
        if bootstrap_timeout <= 0:
            raise SettingsError(
                "GATEWAY_CACHE_BOOTSTRAP_TIMEOUT must be positive (e.g. 10s): how long the auth "
                "cache bootstrap may hold readiness"
            )
        l1_size = _positive_int(env, "LW_GATEWAY_AUTH_CACHE_SIZE", 10_000)
        return cls(
            base_url=base,
            soft_ttl=soft_ttl,
            soft_bump=soft_bump,
            hard_grace=hard_grace,
            l1_size=l1_size,
            redis_prefix=prefix,
            negative_ttl=max(0.0, negative_ttl),
            redis_cluster=cluster,
            bootstrap_all_keys=bootstrap in ("1", "true", "yes", "on"),
            bootstrap_max_keys=min(
                l1_size, _positive_int(env, "GATEWAY_CACHE_BOOTSTRAP_MAX_KEYS", 10_000)
            ),
            bootstrap_timeout=bootstrap_timeout,
        )
