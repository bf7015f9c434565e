"""``stream_chunk`` guardrails: judging a streaming response chunk by chunk (SPEC §6).

The core calls the guard (a per-request stream listener) synchronously for each chunk of SSE
events, and relays the chunk as soon as it returns; it cannot wait for anything. So:

* Evaluators with ``evaluate_sync`` (CPU-only, microseconds — e.g. ``pii``) run **inline**: their
  ``block`` ends the stream before this chunk is sent, their ``modify`` rewrites this chunk. The
  time they take is measured against the 50 ms budget; going over it is logged
  (``guardrail_stream_chunk_over_budget``) and noted on the span, and their verdict still
  applies (the time is spent either way).
* Other evaluators (the ``webhook``, anything doing I/O) run **in the background**, one task per
  evaluator per chunk, each abandoned after the 50 ms budget. The chunk is relayed at once, so
  they never delay the stream. A ``block`` they return ends the stream at the next chunk
  boundary (the next chunk is replaced by the ``event: error`` frame, code
  ``stream_chunk_blocked``); a ``modify`` cannot be applied any more — the chunk has gone — and
  counts as ``fail_open`` (reason ``late_modify``). When the stream ended before the verdict
  arrived, a block is logged (``guardrail_stream_chunk_block_too_late``) and nothing else
  happens.
* Every failure — timeout, error, unusable answer, misconfiguration, too many evaluations
  pending — passes the chunk (fail-open by contract) and sets
  ``langwatch.guardrail.stream_chunk_fail_open=<evaluator>: <reason>`` on the span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tollway import RequestContext, Verdict
from tollway.guardrails import Direction, chunk_content, merge_texts, parse_chunk
from tollway_guardrails import _metrics
from tollway_guardrails._config import EvaluatorRef
from tollway_guardrails._run import MAX_REASON, describe, evaluate_one, judge, make_request

__all__ = ["StreamGuard"]

log = logging.getLogger("tollway.guardrails")
_DIRECTION: Direction = "stream_chunk"


class StreamGuard:
    """The ``stream_chunk`` guardrails of one streaming request (kept on ``ctx.stash``)."""

    __slots__ = (
        "_logged",
        "async_refs",
        "blocked",
        "budget_s",
        "chunks_judged",
        "fail_open_count",
        "finished",
        "max_pending",
        "over_budget_ms",
        "sync_refs",
        "tasks",
    )

    def __init__(
        self,
        ctx: RequestContext,
        refs: tuple[EvaluatorRef, ...],
        budget_s: float,
        max_pending: int,
    ) -> None:
        self.sync_refs = tuple(r for r in refs if r.problem is None and r.sync is not None)
        self.async_refs = tuple(r for r in refs if r.problem is None and r.sync is None)
        self.budget_s = budget_s
        self.max_pending = max_pending
        #: A block verdict from a background evaluation, delivered at the next chunk.
        self.blocked: Verdict | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.chunks_judged = 0
        self.fail_open_count = 0
        self.over_budget_ms = 0.0
        self.finished = False
        self._logged: set[str] = set()
        ctx.span_attributes["langwatch.guardrail.stream_chunk.evaluators"] = ",".join(
            r.name for r in refs
        )
        for ref in refs:
            if ref.problem is not None:
                self.fail_open(ctx, ref, f"misconfigured: {ref.problem}")

    # --- the per-chunk path ---------------------------------------------------------------

    def on_chunk(self, ctx: RequestContext, chunk: bytearray) -> Verdict | None:
        """Judge one chunk; rewrite it in place or return a block."""
        if self.blocked is not None:
            return self._deliver_block(ctx)
        parsed = parse_chunk(ctx.endpoint, chunk)
        if parsed is None:
            return None
        texts = parsed.texts
        content = chunk_content(texts)
        self.chunks_judged += 1
        versions: list[list[str]] = []
        names: list[str] = []
        if self.sync_refs:
            started = time.perf_counter()
            for ref in self.sync_refs:
                request = make_request(ctx, ref, _DIRECTION, content, self.budget_s)
                evaluate_sync = ref.sync
                assert evaluate_sync is not None
                try:
                    answer = evaluate_sync(request)
                except Exception as exc:
                    self.fail_open(ctx, ref, f"error: {describe(exc)}")
                    continue
                outcome = judge(ref, _DIRECTION, answer, texts)
                if outcome.failure is not None:
                    self.fail_open(ctx, ref, f"error: {outcome.failure}")
                    continue
                assert outcome.verdict is not None
                _metrics.count(_DIRECTION, outcome.verdict.decision)
                if outcome.verdict.decision == "block":
                    self.blocked = self._block_verdict(outcome.verdict, ref)
                    return self._deliver_block(ctx)
                if outcome.texts is not None:
                    versions.append(outcome.texts)
                    names.append(ref.name)
            elapsed = time.perf_counter() - started
            if elapsed > self.budget_s:
                self._over_budget(ctx, elapsed)
        if self.async_refs:
            self._schedule(ctx, content, texts)
        if versions:
            new = merge_texts(texts, versions)
            if new != texts:
                chunk[:] = parsed.rewrite(new)
                ctx.span_attributes["langwatch.guardrail.stream_chunk.decision"] = "modify"
                return Verdict("modify", "", ",".join(names))
        return None

    def _block_verdict(self, verdict: Verdict, ref: EvaluatorRef) -> Verdict:
        reason = verdict.reason or f"the response was blocked by guardrail evaluator {ref.name!r}"
        return Verdict("block", reason, ref.name)

    def _deliver_block(self, ctx: RequestContext) -> Verdict | None:
        verdict = self.blocked
        attrs = ctx.span_attributes
        if verdict is not None:
            attrs["langwatch.guardrail.stream_chunk.decision"] = "block"
            attrs["langwatch.guardrail.stream_chunk.blocked_by"] = verdict.evaluator
            attrs["langwatch.guardrail.stream_chunk.reason"] = verdict.reason[:MAX_REASON]
        self.cancel()
        return verdict

    # --- background evaluations -------------------------------------------------------------

    def _schedule(self, ctx: RequestContext, content: dict[str, Any], texts: list[str]) -> None:
        if len(self.tasks) >= self.max_pending:
            for ref in self.async_refs:
                self.fail_open(
                    ctx,
                    ref,
                    f"backlog: {len(self.tasks)} evaluations of this stream are already pending",
                )
            return
        loop = asyncio.get_running_loop()
        for ref in self.async_refs:
            request = make_request(ctx, ref, _DIRECTION, content, self.budget_s)
            task = loop.create_task(self._judge_late(ctx, ref, request, texts))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _judge_late(
        self, ctx: RequestContext, ref: EvaluatorRef, request: Any, texts: list[str]
    ) -> None:
        outcome = await evaluate_one(ref, request, texts)
        if outcome.failure is not None:
            self.fail_open(ctx, ref, outcome.failure)
            return
        verdict = outcome.verdict
        assert verdict is not None
        if verdict.decision == "block":
            _metrics.count(_DIRECTION, "block")
            if self.finished:
                log.warning(
                    "guardrail_stream_chunk_block_too_late evaluator=%s reason=%s",
                    ref.name,
                    verdict.reason,
                    extra={"evaluator": ref.name, "reason": verdict.reason},
                )
                ctx.span_attributes["langwatch.guardrail.stream_chunk.late_block"] = ref.name
            elif self.blocked is None:
                self.blocked = self._block_verdict(verdict, ref)
        elif outcome.texts is not None and outcome.texts != texts:
            self.fail_open(
                ctx,
                ref,
                "late_modify: the chunk was sent before the verdict arrived; only evaluators "
                "with evaluate_sync can rewrite stream chunks",
            )
        else:
            _metrics.count(_DIRECTION, "allow")

    def cancel(self) -> None:
        """Abandon the background evaluations (the stream is over or blocked)."""
        for task in list(self.tasks):
            task.cancel()

    # --- bookkeeping ------------------------------------------------------------------------

    def fail_open(self, ctx: RequestContext, ref: EvaluatorRef, reason: str) -> None:
        """Pass, count and note a failed evaluation (fail-open by contract)."""
        _metrics.count(_DIRECTION, "fail_open", cause="evaluator_failure")
        self.fail_open_count += 1
        attrs = ctx.span_attributes
        attrs.setdefault("langwatch.guardrail.stream_chunk_fail_open", f"{ref.name}: {reason}")
        attrs["langwatch.guardrail.stream_chunk.fail_open_count"] = self.fail_open_count
        if ref.path not in self._logged:  # once per evaluator per stream, not per chunk
            self._logged.add(ref.path)
            log.warning(
                "guardrail_fail_open direction=stream_chunk evaluator=%s path=%s reason=%s",
                ref.name,
                ref.path,
                reason,
                extra={
                    "direction": _DIRECTION,
                    "evaluator": ref.name,
                    "config_path": ref.path,
                    "reason": reason,
                },
            )

    def _over_budget(self, ctx: RequestContext, elapsed: float) -> None:
        ms = round(elapsed * 1000, 3)
        if ms > self.over_budget_ms:
            self.over_budget_ms = ms
            ctx.span_attributes["langwatch.guardrail.stream_chunk.over_budget_ms"] = ms
        if "__over_budget__" not in self._logged:
            self._logged.add("__over_budget__")
            log.warning(
                "guardrail_stream_chunk_over_budget elapsed_ms=%s budget_ms=%s evaluators=%s",
                ms,
                round(self.budget_s * 1000),
                ",".join(r.name for r in self.sync_refs),
                extra={"elapsed_ms": ms, "budget_ms": round(self.budget_s * 1000)},
            )

    def finish(self, ctx: RequestContext) -> None:
        """The stream is over (``account``): late verdicts are only logged from now on."""
        self.finished = True
        ctx.span_attributes["langwatch.guardrail.stream_chunk.chunks_judged"] = self.chunks_judged
