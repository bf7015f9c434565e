"""How late the event loop runs what is due: the ``gateway_event_loop_lag_seconds`` histogram.

Every request a gateway process serves waits its turn on one event loop. When that loop is kept
from running (a slow synchronous call in a plugin, a long garbage collection, a background
thread holding the GIL, a starved CPU), every request in flight waits too, and its latency says
nothing about the upstream. Ten times a second a timer notes how late it fired; the histogram of
those delays is what the loop's stalls looked like, so an operator reading a p99 can tell a
stalled gateway from a slow provider.
"""

from __future__ import annotations

import asyncio

__all__ = ["LAG_BUCKETS", "watch_loop_lag"]

#: Seconds: a healthy loop fires its timers within a millisecond or so.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: How often the timer fires.
PERIOD = 0.1

_WATCHING: list[asyncio.AbstractEventLoop] = []


def watch_loop_lag(loop: asyncio.AbstractEventLoop) -> None:
    """Record how late ``loop`` runs a timer, ten times a second, from now on (once per loop;
    nothing without prometheus-client)."""
    if loop in _WATCHING:
        return
    try:
        from tollway.metrics import histogram
    except ImportError:  # prometheus-client not installed
        return
    observe = histogram(
        "gateway_event_loop_lag_seconds",
        "How late the event loop ran a timer that fires ten times a second: while it is late, "
        "every request in flight waits (a blocking call, a collector pause, the GIL held by "
        "another thread, a starved CPU)",
        buckets=LAG_BUCKETS,
    ).observe
    clock = loop.time

    def tick(due: float) -> None:
        now = clock()
        observe(max(0.0, now - due))
        loop.call_at(now + PERIOD, tick, now + PERIOD)

    _WATCHING.append(loop)
    start = clock() + PERIOD
    loop.call_at(start, tick, start)
