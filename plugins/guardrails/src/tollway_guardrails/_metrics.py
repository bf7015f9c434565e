"""``gateway_guardrail_verdicts_total{direction,verdict}`` (SPEC §6, §7).

Recorded in prometheus-client's default registry, which the telemetry plugin exposes on
``/metrics``. One count per evaluator outcome: ``allow``, ``block``, ``modify``, ``fail_open``
(the evaluator failed and the direction passed anyway) and ``error`` (it failed and the request
was refused, fail-closed).
"""

from __future__ import annotations

from typing import Any

import prometheus_client

from tollway.guardrails import DIRECTIONS

__all__ = ["VERDICTS", "count", "counter"]

VERDICTS = ("allow", "block", "modify", "fail_open", "error")
_NAME = "gateway_guardrail_verdicts"


def _make() -> Any:
    try:
        return prometheus_client.Counter(
            _NAME,
            "Guardrail evaluator outcomes, by direction (pre, post, stream_chunk) and verdict "
            "(allow, block, modify, fail_open, error).",
            ["direction", "verdict"],
        )
    except ValueError:  # already registered in this process (a second import path)
        return prometheus_client.REGISTRY._names_to_collectors[_NAME]


counter = _make()
# Children resolved once: counting on the per-chunk path is one attribute call.
_CHILDREN: dict[tuple[str, str], Any] = {
    (d, v): counter.labels(direction=d, verdict=v) for d in DIRECTIONS for v in VERDICTS
}


def count(direction: str, verdict: str, n: int = 1) -> None:
    """Count ``n`` evaluator outcomes."""
    _CHILDREN[(direction, verdict)].inc(n)
