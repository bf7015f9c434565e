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
exposes it on ``/metrics``. Requires ``prometheus-client`` (``pip install "tollway[metrics]"``;
a plugin that uses this module depends on it itself).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

__all__ = ["counter", "histogram"]

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
