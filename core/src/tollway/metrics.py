"""Prometheus metrics for plugins: get-or-create a metric by name, on prometheus-client's public
API.

A plugin declares its metrics at module level::

    from tollway.metrics import counter

    DENIED = counter("gateway_rate_limit_denied_total", "Requests refused ...", ("dimension",))

Creating the same metric twice in one process (a module imported under two names, a test that
reloads a plugin) returns the first one instead of failing with prometheus-client's "Duplicated
timeseries" error. This module remembers what it created itself, so it never reads the
registry's private ``_names_to_collectors``. Asking again for a name with another kind of metric
or other label names is a programming error and raises :class:`ValueError`.

Metrics go to prometheus-client's default registry unless told otherwise; the telemetry plugin
exposes it on ``/metrics`` through :func:`exposition`.

Several workers (``tollway serve --workers N``): the supervisor sets ``PROMETHEUS_MULTIPROC_DIR``
for every worker, so prometheus-client keeps each worker's values in files there, and
:func:`exposition` on any worker reads them all — counters and histograms summed over every
worker that ran, gauges made with ``multiprocess_mode="livesum"`` summed over the running ones.
A gauge whose value comes from ``set_function`` is not shared that way: set it instead.

Requires ``prometheus-client`` (``pip install "tollway[metrics]"``;
a plugin that uses this module depends on it itself).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["counter", "exposition", "histogram", "multiprocess", "worker_exited"]

#: The environment variable prometheus-client reads at import for its multi-process mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

M = TypeVar("M", Counter, Histogram)

#: (registry id, canonical name) → (the metric, its label names).
_MADE: dict[tuple[int, str], tuple[Any, tuple[str, ...]]] = {}
_LOCK = threading.Lock()


def _canonical(kind: type[Any], name: str) -> str:
    # prometheus-client strips a counter's ``_total`` suffix: both spellings are one counter.
    if kind is Counter and name.endswith("_total"):
        return name[: -len("_total")]
    return name


def _get_or_create(
    kind: type[M],
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    registry: CollectorRegistry,
    **options: Any,
) -> M:
    labels = tuple(labelnames)
    key = (id(registry), _canonical(kind, name))
    with _LOCK:
        made = _MADE.get(key)
        if made is None:
            metric = kind(name, documentation, labels, registry=registry, **options)
            _MADE[key] = (metric, labels)
            return metric
    metric, known = made
    if not isinstance(metric, kind) or known != labels:
        raise ValueError(
            f"metric {name!r} already exists as a {type(metric).__name__} with labels "
            f"{list(known)}; asked for a {kind.__name__} with labels {list(labels)}"
        )
    return metric


def counter(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    *,
    registry: CollectorRegistry = REGISTRY,
) -> Counter:
    """The counter ``name`` (``_total`` is optional, as in prometheus-client), created on first
    use. Raises :class:`ValueError` if ``name`` exists as another kind of metric, with other
    labels, or was registered in ``registry`` without this helper."""
    return _get_or_create(Counter, name, documentation, labelnames, registry)


def histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    *,
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    registry: CollectorRegistry = REGISTRY,
) -> Histogram:
    """The histogram ``name``, created on first use (``buckets`` apply then). Raises like
    :func:`counter`."""
    return _get_or_create(
        Histogram, name, documentation, labelnames, registry, buckets=tuple(buckets)
    )


def multiprocess() -> bool:
    """True in a worker of ``tollway serve --workers N`` (N > 1): metric values live in the
    shared ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition(*registries: CollectorRegistry) -> bytes:
    """The Prometheus text exposition for ``/metrics``.

    One process: the default registry (plugins' metrics, process collectors), then each of
    ``registries``. Several workers: every worker's metrics from the shared directory (the
    metrics of ``registries`` are among them; per-process collectors are left out)."""
    if multiprocess():
        from prometheus_client.multiprocess import MultiProcessCollector

        shared = CollectorRegistry()
        MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
        return generate_latest(shared)
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))


def worker_exited(pid: int, directory: str) -> None:
    """Forget the live gauges of the worker ``pid`` that exited (its counters stay summed):
    called by the supervisor of ``tollway serve --workers N``."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
