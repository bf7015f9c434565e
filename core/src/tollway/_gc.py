"""The cyclic garbage collector in a serving gateway: what start-up built is frozen out of its
reach, and every collection's pause is measured.

A collection stops the event loop for as long as it runs, so its pauses land directly in the
requests' tail latency. Two things keep them short and visible:

* :func:`freeze_startup_objects` moves what start-up built (modules, plugins, compiled
  policies, the app: ~110 k objects) into the permanent generation, once, before the first
  request. Those objects live as long as the process, yet every full collection walked them:
  ~50 ms with the loop stopped, several times a minute under load. Frozen, a full collection
  walks only what requests left behind (a few ms). Reference counting still frees frozen
  objects; only a reference cycle among them that is dropped later would never be collected.
* :func:`watch_pauses` records each collection's duration as the histogram
  ``gateway_gc_pause_seconds{generation}`` (when prometheus-client is installed; fed once a
  second), so an operator reading a p99 can tell a collector pause from a slow upstream.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from typing import Any

__all__ = ["PAUSE_BUCKETS", "freeze_startup_objects", "watch_pauses"]

#: Seconds: a young collection takes well under a millisecond, a full one a few.
PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

_WATCHING: list[Any] = []


def freeze_startup_objects() -> None:
    """Collect once, then freeze every object that is left (call it after start-up)."""
    gc.collect()
    gc.freeze()


def watch_pauses(loop: asyncio.AbstractEventLoop) -> None:
    """Record every collection's pause in ``gateway_gc_pause_seconds`` from now on (once per
    process; nothing without prometheus-client).

    The collector's callback only notes the pause: a collection can start inside any code,
    prometheus-client's own included (its multi-process values share one lock), so the
    histogram is fed from ``loop`` once a second instead."""
    if _WATCHING:
        return
    try:
        from tollway.metrics import histogram
    except ImportError:  # prometheus-client not installed
        return
    metric = histogram(
        "gateway_gc_pause_seconds",
        "Pauses of Python's cyclic garbage collector (the event loop stops for each), by "
        "generation (2: a full collection)",
        ("generation",),
        buckets=PAUSE_BUCKETS,
    )
    by_generation = [metric.labels(str(g)) for g in range(3)]
    noted: deque[tuple[int, float]] = deque(maxlen=100_000)
    started = [0.0]
    clock = time.perf_counter

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = clock()
        else:
            noted.append((info["generation"], clock() - started[0]))

    def record() -> None:
        while noted:
            generation, seconds = noted.popleft()
            by_generation[generation].observe(seconds)
        loop.call_later(1.0, record)

    gc.callbacks.append(on_collection)
    _WATCHING.append(on_collection)
    loop.call_later(1.0, record)
