"""``gateway_guardrail_verdicts_total{direction,verdict,cause}`` (SPEC §6, §7).

Recorded in prometheus-client's default registry, which the telemetry plugin exposes on
``/metrics``. One count per evaluator outcome. ``verdict`` is what happened to the call:
``allow``, ``block``, ``modify``, or ``fail_open`` (the evaluator failed and the direction passed
anyway). An evaluator failure on a fail-closed direction refuses the call, so it counts as
``block`` — the reference's alert on ``{verdict="block"}`` fires during an evaluator outage.
``cause`` tells the two kinds of block apart: ``verdict`` (the evaluator answered) or
``evaluator_failure`` (it timed out, raised or answered nonsense; ``fail_open`` always has it).
"""

from __future__ import annotations

from typing import Any

from tollway.guardrails import DIRECTIONS
from tollway.metrics import counter as _get_counter

__all__ = ["CAUSES", "VERDICTS", "count", "counter"]

VERDICTS = ("allow", "block", "modify", "fail_open")
CAUSES = ("verdict", "evaluator_failure")
_NAME = "gateway_guardrail_verdicts"


counter = _get_counter(
    _NAME,
    "Guardrail evaluator outcomes, by direction (pre, post, stream_chunk), verdict "
    "(allow, block, modify, fail_open) and cause (verdict: the evaluator's answer; "
    "evaluator_failure: it failed, and the call was refused or passed).",
    ["direction", "verdict", "cause"],
)
# Children resolved once: counting on the per-chunk path is one attribute call.
_CHILDREN: dict[tuple[str, str, str], Any] = {
    (d, v, c): counter.labels(direction=d, verdict=v, cause=c)
    for d in DIRECTIONS
    for v in VERDICTS
    for c in CAUSES
}


def count(direction: str, verdict: str, n: int = 1, *, cause: str = "verdict") -> None:
    """Count ``n`` evaluator outcomes."""
    _CHILDREN[(direction, verdict, cause)].inc(n)
