"""Running one direction's evaluators and deciding what their verdicts mean."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from tollway import RequestContext, ServiceUnavailable, Verdict
from tollway.guardrails import (
    ContentShapeError,
    Direction,
    GuardrailRequest,
    merge_texts,
    texts_from_content,
)
from tollway_guardrails import _metrics
from tollway_guardrails._config import EvaluatorRef, Plan
from tollway_guardrails._webhook import WebhookError

__all__ = [
    "MAX_REASON",
    "Decision",
    "Outcome",
    "describe",
    "evaluate_one",
    "judge",
    "run_direction",
    "verdicts_attribute",
]

log = logging.getLogger("tollway.guardrails")

#: ``Retry-After`` on a fail-closed 503: the evaluator may be back shortly.
UNAVAILABLE_RETRY_AFTER = 5
#: ``Retry-After`` when the key's config cannot run: over 60 s, so the core adds
#: ``x-should-retry: false`` — retrying does not help until someone fixes the key.
MISCONFIGURED_RETRY_AFTER = 300
#: A block reason on the span is cut to this many characters (it is the evaluator's own
#: explanation, as the client gets it; the plugin never adds the judged content to it).
MAX_REASON = 256


@attrs.frozen
class Outcome:
    """What one evaluator answered: a usable verdict (with the texts a ``modify`` asks for) or
    the reason it failed."""

    ref: EvaluatorRef
    verdict: Verdict | None = None
    texts: list[str] | None = None
    failure: str | None = None


@attrs.frozen
class Decision:
    """A direction's result: ``verdict`` is ``None`` (pass), a ``block`` or a ``modify`` whose
    merged slot texts are ``texts``."""

    verdict: Verdict | None = None
    texts: list[str] | None = None


def describe(exc: BaseException) -> str:
    """A one-line reason for a failed evaluation."""
    if isinstance(exc, WebhookError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def judge(
    ref: EvaluatorRef, direction: Direction, verdict: Any, original: Sequence[str]
) -> Outcome:
    """Check an evaluator's answer; a ``modify`` is turned into the slot texts it asks for."""
    if not isinstance(verdict, Verdict):
        return Outcome(ref, failure=f"answered {verdict!r}, not a tollway.Verdict")
    decision = verdict.decision
    if decision == "modify":
        try:
            texts = texts_from_content(direction, verdict.content, original)
        except ContentShapeError as exc:
            return Outcome(ref, failure=f"answered modify with unusable content: {exc}")
        return Outcome(ref, verdict, texts)
    if decision not in ("allow", "block"):
        return Outcome(ref, failure=f"answered decision {decision!r}")
    return Outcome(ref, verdict)


async def evaluate_one(
    ref: EvaluatorRef, request: GuardrailRequest, original: Sequence[str]
) -> Outcome:
    """Run one evaluator with its timeout; never raises (except cancellation)."""
    if ref.problem is not None or ref.evaluator is None:
        return Outcome(ref, failure=ref.problem or "not installed")
    sync = getattr(ref.evaluator, "evaluate_sync", None)
    try:
        if sync is not None:  # CPU-only, microseconds: the same verdict without a timer
            verdict = sync(request)
        else:
            async with asyncio.timeout(request.timeout_s):
                verdict = await ref.evaluator.evaluate(request)
    except TimeoutError:
        return Outcome(ref, failure=f"timeout: no verdict within {request.timeout_s * 1000:g} ms")
    except Exception as exc:
        return Outcome(ref, failure=describe(exc))
    return judge(ref, request.direction, verdict, original)


def make_request(
    ctx: RequestContext,
    ref: EvaluatorRef,
    direction: Direction,
    content: Mapping[str, Any],
    timeout_s: float,
) -> GuardrailRequest:
    principal = ctx.principal
    return GuardrailRequest(
        direction=direction,
        content=content,
        settings=ref.settings,
        vk_id=principal.key_id if principal is not None else "",
        request_id=ctx.request_id,
        timeout_s=timeout_s,
        endpoint=ctx.endpoint,
    )


async def _gather(
    refs: Sequence[EvaluatorRef], requests: Sequence[GuardrailRequest], original: Sequence[str]
) -> list[Outcome]:
    """Run evaluators concurrently; the first ``block`` to arrive cancels the rest."""
    if len(refs) == 1:
        return [await evaluate_one(refs[0], requests[0], original)]
    tasks = [
        asyncio.ensure_future(evaluate_one(ref, req, original))
        for ref, req in zip(refs, requests, strict=True)
    ]
    pending: set[asyncio.Future[Outcome]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(_blocks(t.result()) for t in done):
                break
    finally:
        for task in pending:
            task.cancel()
    return [t.result() for t in tasks if t.done() and not t.cancelled()]


def _blocks(outcome: Outcome) -> bool:
    return outcome.verdict is not None and outcome.verdict.decision == "block"


def record_fail_open(
    ctx: RequestContext, direction: Direction, ref: EvaluatorRef, reason: str
) -> None:
    """Log ``guardrail_fail_open`` and note it on the span."""
    log.warning(
        "guardrail_fail_open direction=%s evaluator=%s path=%s reason=%s",
        direction,
        ref.name,
        ref.path,
        reason,
        extra={
            "direction": direction,
            "evaluator": ref.name,
            "config_path": ref.path,
            "reason": reason,
        },
    )
    ctx.span_attributes.setdefault(
        f"langwatch.guardrail.{direction}_fail_open", f"{ref.name}: {reason}"
    )


async def run_direction(
    ctx: RequestContext,
    plan: Plan,
    direction: Direction,
    content: Mapping[str, Any],
    original: Sequence[str],
) -> Decision:
    """Run ``direction``'s evaluators on ``content`` and decide (``pre`` and ``post``).

    Concurrently; the first block wins. Failures fail closed (``ServiceUnavailable``, code
    ``guardrail_unavailable``) unless the key's ``fail_open.<direction>`` is true. Modifies are
    merged in config order.
    """
    refs = plan.refs(direction)
    if direction == "pre" and any(not hasattr(r.evaluator, "evaluate_sync") for r in refs):
        # An evaluator that may call a service: the request's admission decisions first, so a
        # request the rate limits or a budget refuse never costs a webhook or an LLM call.
        await ctx.flush_deferred()
    started = time.perf_counter()
    requests = [make_request(ctx, ref, direction, content, ref.timeout_s) for ref in refs]
    outcomes = await _gather(refs, requests, original)
    attrs_ = ctx.span_attributes
    attrs_[f"langwatch.guardrail.{direction}.evaluators"] = ",".join(r.name for r in refs)
    attrs_[f"langwatch.guardrail.{direction}.verdicts"] = verdicts_attribute(outcomes)
    attrs_[f"langwatch.guardrail.{direction}.duration_ms"] = round(
        (time.perf_counter() - started) * 1000, 3
    )
    by_order = outcomes  # config order (cancelled evaluators left out)
    for outcome in by_order:
        if _blocks(outcome):
            assert outcome.verdict is not None
            for o in outcomes:
                _count(direction, o, plan)
            reason = outcome.verdict.reason or (
                f"the {'request' if direction == 'pre' else 'response'} was blocked by "
                f"guardrail evaluator {outcome.ref.name!r}"
            )
            attrs_[f"langwatch.guardrail.{direction}.decision"] = "block"
            attrs_[f"langwatch.guardrail.{direction}.blocked_by"] = outcome.ref.name
            attrs_[f"langwatch.guardrail.{direction}.reason"] = reason[:MAX_REASON]
            return Decision(Verdict("block", reason, outcome.ref.name))
    failures = [o for o in by_order if o.failure is not None]
    fail_open = plan.fail_open(direction)
    for outcome in by_order:
        _count(direction, outcome, plan)
    if failures:
        if not fail_open:
            attrs_[f"langwatch.guardrail.{direction}.decision"] = "error"
            raise _unavailable(direction, failures[0])
        for outcome in failures:
            assert outcome.failure is not None
            record_fail_open(ctx, direction, outcome.ref, outcome.failure)
    modifies = [o for o in by_order if o.texts is not None]
    if modifies:
        texts = merge_texts(original, [o.texts for o in modifies if o.texts is not None])
        if texts != list(original):
            names = ",".join(o.ref.name for o in modifies)
            attrs_[f"langwatch.guardrail.{direction}.decision"] = "modify"
            return Decision(Verdict("modify", "", names), texts)
    attrs_[f"langwatch.guardrail.{direction}.decision"] = "fail_open" if failures else "allow"
    return Decision()


def verdicts_attribute(outcomes: Sequence[Outcome]) -> str:
    """``pii=allow,moderation=block``: each evaluator's verdict, in config order, for the span
    (``error`` when it failed; an evaluator cancelled by another's block is left out). Names and
    verdicts only: never the content judged."""
    return ",".join(
        f"{o.ref.name}={'error' if o.verdict is None else o.verdict.decision}" for o in outcomes
    )


def _count(direction: Direction, outcome: Outcome, plan: Plan) -> None:
    if outcome.failure is not None:
        # Fail-closed, a failure refuses the call: a block, as the reference counts it.
        verdict = "fail_open" if plan.fail_open(direction) else "block"
        _metrics.count(direction, verdict, cause="evaluator_failure")
    elif outcome.verdict is not None:
        _metrics.count(direction, outcome.verdict.decision)


def _unavailable(direction: Direction, outcome: Outcome) -> ServiceUnavailable:
    ref = outcome.ref
    what = "request" if direction == "pre" else "response"
    if ref.problem is not None:
        return ServiceUnavailable(
            f"guardrail evaluator {ref.name!r} ({ref.path}) cannot run: {ref.problem}; fix the "
            f"key's guardrails config (or install the evaluator's plugin on this gateway). "
            f"Until then the {direction} guardrails fail closed",
            code="guardrail_unavailable",
            retry_after=MISCONFIGURED_RETRY_AFTER,
        )
    return ServiceUnavailable(
        f"guardrail evaluator {ref.name!r} ({ref.path}) failed on the {direction} check of the "
        f"{what}: {outcome.failure}. The key's guardrails fail closed: restore the evaluator, or "
        f"set guardrails.fail_open.{direction} = true to let traffic through unchecked while "
        "it is down",
        code="guardrail_unavailable",
        retry_after=UNAVAILABLE_RETRY_AFTER,
    )
