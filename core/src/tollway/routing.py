"""Routing strategies: how the providers of one chain share the load (SPEC §5, issue 24).

A chain (a routing policy's entries, or the config file's providers) is walked in an order
computed per request by its **strategy**:

* ``ordered`` (default): the chain's own order — a fixed fallback order;
* ``weighted``: the first provider drawn at random in proportion to the entries' weights (an
  entry of weight 0 is never drawn first: a fallback only), the rest drawn the same way
  without replacement, then the weight-0 entries in chain order;
* ``least-latency``: the lowest moving average (EWMA) of time to first byte first; an entry
  never measured counts as fastest (so it gets measured); now and then (:data:`EXPLORE`) the
  order is the chain's, so a provider that got faster is noticed;
* ``least-busy``: the fewest requests in flight first (ties drawn at random).

Whatever the strategy, every entry of the chain stays in the order (fallback covers them all).

:class:`LiveStats` is what the gateway measures per provider credential (its
:attr:`~tollway.config.ProviderConfig.key`): latency, in-flight count and the cool-down an
upstream ``429`` with ``Retry-After`` asked for. It is process-local; when ``GATEWAY_REDIS_URL``
is set the gateway shares it across replicas (:mod:`tollway._routing_share`), published and
read in one batch per second — never a Redis round trip per request.

Each strategy is O(n) (``weighted`` O(n²)) in the chain's length, which is a handful.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from tollway._context import StashKey

if TYPE_CHECKING:
    from tollway._context import RequestContext

__all__ = [
    "DEFAULT_COOLDOWN_SECONDS",
    "DEFAULT_MAX_TOKENS_HEADER",
    "EWMA_ALPHA",
    "EXPLORE",
    "FAILURE_PENALTY_SECONDS",
    "MAX_COOLDOWN_SECONDS",
    "MAX_OUTPUT_LOOKUP",
    "STRATEGIES",
    "LiveStats",
    "Strategy",
    "default_max_tokens",
    "order",
    "retry_after_seconds",
    "strategy_problem",
    "weight_problem",
    "weighted_order",
]

Strategy = Literal["ordered", "weighted", "least-latency", "least-busy"]
#: Every strategy, the default first.
STRATEGIES: Final[tuple[Strategy, ...]] = ("ordered", "weighted", "least-latency", "least-busy")
#: Weight of the newest time-to-first-byte sample in the moving average.
EWMA_ALPHA: Final = 0.3
#: Share of ``least-latency`` requests walked in the chain's own order (re-measures the others).
EXPLORE: Final = 0.02
#: Cool-down after an upstream 429 without a usable ``Retry-After``.
DEFAULT_COOLDOWN_SECONDS: Final = 1.0
#: Added to the time a failed attempt (connection error, timeout, 5xx) took before it is folded
#: into the latency average: a failing provider sinks under ``least-latency``.
FAILURE_PENALTY_SECONDS: Final = 1.0
#: The longest cool-down a ``Retry-After`` can set.
MAX_COOLDOWN_SECONDS: Final = 300.0

#: The response header naming the ``max_tokens`` the gateway filled in for an upstream that
#: requires it when the client sent none (the attempt that answered).
DEFAULT_MAX_TOKENS_HEADER: Final = "X-LangWatch-Default-Max-Tokens"
#: On ``gateway.stash``: ``(model, provider_type) -> max output tokens or None``, set by a
#: plugin that knows the models (``tollway-budgets`` from its price table).
MAX_OUTPUT_LOOKUP: StashKey[Callable[[str, str], int | None]] = StashKey("max_output_lookup")
#: ``[routing] default_max_tokens`` when the gateway has no settings (a bare context).
_FALLBACK_CAP: Final = 4096

T = TypeVar("T")


def default_max_tokens(
    ctx: RequestContext, model: str, provider_config: Mapping[str, Any] | None = None
) -> int:
    """The ``max_tokens`` to send for ``model`` when the client sent none, and report it in
    :data:`DEFAULT_MAX_TOKENS_HEADER`: the model's maximum output (:data:`MAX_OUTPUT_LOOKUP`)
    capped by the provider's ``config.default_max_tokens``, else the gateway's
    ``[routing] default_max_tokens``."""
    gateway = ctx.gateway
    cap = (provider_config or {}).get("default_max_tokens")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        settings = getattr(gateway, "settings", None)
        cap = settings.routing.default_max_tokens if settings is not None else _FALLBACK_CAP
    value: int = cap
    lookup = gateway.stash.get(MAX_OUTPUT_LOOKUP) if gateway is not None else None
    if lookup is not None:
        most = lookup(model, ctx.provider_type or "")
        if most is not None and 0 < most < value:
            value = most
    ctx.response_headers[DEFAULT_MAX_TOKENS_HEADER] = str(value)
    return value


def strategy_problem(value: object) -> str | None:
    """Why ``value`` is not a strategy (a message saying what to write), or None."""
    if isinstance(value, str) and value in STRATEGIES:
        return None
    return f"{value!r} is not a routing strategy; use one of {', '.join(STRATEGIES)}"


def weight_problem(value: object) -> str | None:
    """Why ``value`` is not an entry weight (an integer 0..1000000), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        return f"{value!r} is not a weight; use a whole number from 0 (fallback only) to 1000000"
    return None


def retry_after_seconds(headers: Iterable[tuple[str, str]]) -> float | None:
    """The delay an upstream's ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``
    asks for, capped at :data:`MAX_COOLDOWN_SECONDS`; None when absent or unreadable."""
    seconds: float | None = None
    for name, value in headers:
        lower = name.lower()
        text = value.strip()
        if lower == "retry-after-ms":
            try:
                seconds = float(text) / 1000
            except ValueError:
                continue
            break
        if lower == "retry-after" and seconds is None:
            try:
                seconds = float(text)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(text)
                except (TypeError, ValueError):
                    continue
                seconds = when.timestamp() - time.time()
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_COOLDOWN_SECONDS)


def weighted_order(weights: Sequence[int], rng: random.Random | None = None) -> list[int]:
    """Indices of ``weights`` in a weighted random order: positive weights drawn in proportion
    without replacement, then the zero weights in their own order."""
    rand = (rng or _RNG).random
    left = [i for i, w in enumerate(weights) if w > 0]
    total = sum(weights[i] for i in left)
    out: list[int] = []
    while left:
        point = rand() * total
        pick = len(left) - 1
        for pos, i in enumerate(left):
            point -= weights[i]
            if point < 0:
                pick = pos
                break
        chosen = left.pop(pick)
        total -= weights[chosen]
        out.append(chosen)
    out.extend(i for i, w in enumerate(weights) if w <= 0)
    return out


class LiveStats:
    """Per-credential live measurements: EWMA time to first byte, requests in flight, and the
    cool-down deadline set by upstream 429s. Peers' values (other replicas, via Redis) are
    merged in by :meth:`merge_peers`; the local ones are what :meth:`snapshot` publishes."""

    __slots__ = ("_cool", "_peer_busy", "_peer_cool", "_peer_ttfb", "busy", "on_cool_down", "ttfb")

    def __init__(self) -> None:
        #: EWMA of the time to first byte, seconds, by provider key (measured here).
        self.ttfb: dict[str, float] = {}
        #: Requests in flight here, by provider key.
        self.busy: dict[str, int] = {}
        #: Cool-down deadlines (wall clock, so replicas agree), by provider key.
        self._cool: dict[str, float] = {}
        self._peer_ttfb: dict[str, float] = {}
        self._peer_busy: dict[str, int] = {}
        self._peer_cool: dict[str, float] = {}
        #: Called after a new cool-down (the Redis share publishes it at once).
        self.on_cool_down: Callable[[], None] | None = None

    # --- measurements -----------------------------------------------------------------

    def started(self, key: str) -> None:
        self.busy[key] = self.busy.get(key, 0) + 1

    def ended(self, key: str) -> None:
        n = self.busy.get(key, 0) - 1
        if n > 0:
            self.busy[key] = n
        else:
            self.busy.pop(key, None)

    def first_byte(self, key: str, seconds: float) -> None:
        """Fold one time-to-first-byte sample into ``key``'s moving average."""
        old = self.ttfb.get(key)
        self.ttfb[key] = seconds if old is None else old + EWMA_ALPHA * (seconds - old)

    def cool_down(self, key: str, seconds: float, now: float | None = None) -> float:
        """Mark ``key`` cooling down for ``seconds`` (an upstream 429); returns the deadline."""
        until = (time.time() if now is None else now) + seconds
        if until > self._cool.get(key, 0.0):
            self._cool[key] = until
            if self.on_cool_down is not None:
                self.on_cool_down()
        return until

    # --- what strategies read ----------------------------------------------------------

    def latency(self, key: str) -> float | None:
        """The EWMA time to first byte (this replica's, else a peer's), or None if unmeasured."""
        value = self.ttfb.get(key)
        return self._peer_ttfb.get(key) if value is None else value

    def load(self, key: str) -> int:
        """Requests in flight to ``key`` here and (as last published) on the peers."""
        return self.busy.get(key, 0) + self._peer_busy.get(key, 0)

    def cooling(self, key: str, now: float | None = None) -> float:
        """Seconds ``key`` still cools down (0 when it may be called)."""
        until = max(self._cool.get(key, 0.0), self._peer_cool.get(key, 0.0))
        if not until:
            return 0.0
        left = until - (time.time() if now is None else now)
        return left if left > 0 else 0.0

    # --- sharing with peers (tollway._routing_share) ------------------------------------

    def snapshot(self, now: float | None = None) -> dict[str, tuple[float | None, int, float]]:
        """This replica's (ttfb, in-flight, cool-down deadline) by key; past deadlines dropped."""
        t = time.time() if now is None else now
        for key in [k for k, until in self._cool.items() if until <= t]:
            del self._cool[key]
        keys = set(self.ttfb) | set(self.busy) | set(self._cool)
        return {k: (self.ttfb.get(k), self.busy.get(k, 0), self._cool.get(k, 0.0)) for k in keys}

    def merge_peers(self, peers: Iterable[dict[str, tuple[float | None, int, float]]]) -> None:
        """Replace the peers' view with these snapshots (latency averaged, loads summed,
        the latest cool-down kept)."""
        ttfb: dict[str, list[float]] = {}
        busy: dict[str, int] = {}
        cool: dict[str, float] = {}
        for snap in peers:
            for key, (latency, n, until) in snap.items():
                if latency is not None:
                    ttfb.setdefault(key, []).append(latency)
                if n:
                    busy[key] = busy.get(key, 0) + n
                if until > cool.get(key, 0.0):
                    cool[key] = until
        self._peer_ttfb = {k: sum(v) / len(v) for k, v in ttfb.items()}
        self._peer_busy = busy
        self._peer_cool = cool


def order(
    strategy: str,
    keys: Sequence[str],
    weights: Sequence[int],
    stats: LiveStats,
    rng: random.Random | None = None,
) -> list[int]:
    """The indices of a chain (its entries' provider ``keys`` and ``weights``) in the order
    ``strategy`` walks them for one request. Unknown strategies walk the chain's order."""
    n = len(keys)
    if n < 2 or strategy == "ordered":
        return list(range(n))
    r = rng or _RNG
    if strategy == "weighted":
        return weighted_order(weights, r)
    if strategy == "least-latency":
        if r.random() < EXPLORE:
            return list(range(n))
        measured = [stats.latency(k) for k in keys]
        return sorted(range(n), key=lambda i: (measured[i] or 0.0, i))
    if strategy == "least-busy":
        tie = [r.random() for _ in range(n)]
        return sorted(range(n), key=lambda i: (stats.load(keys[i]), tie[i]))
    return list(range(n))


_RNG = random.Random()
