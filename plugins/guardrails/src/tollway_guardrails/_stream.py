"""``stream_chunk`` guardrails: judging a streaming response before it reaches the client
(SPEC §6).

The guard is a per-request stream filter (``ctx.stream_filters``): the core awaits it for each
chunk of SSE events and relays only what it hands back. So every evaluator's verdict applies to
the very text it judged:

* The guard keeps a **sliding window** of whole SSE events: each chunk with text is judged
  together with the events still held back, as one text (``{"delta": <window text>, "deltas":
  [<window text>]}``), so a pattern split across deltas (``alice@exa`` + ``mple.com``) is seen
  whole. After the verdict, the events are relayed except the last ones whose text adds up to
  at most ``stream_chunk_window_chars`` characters; those wait for the next chunk's judgement,
  and are relayed when the stream ends or is cut. Events are never reordered; only the text an
  evaluator rewrote changes.
* Evaluators with ``evaluate_sync`` (CPU-only — e.g. ``pii``) run inline; the others (the
  ``webhook``, anything doing I/O) run concurrently and are **waited for** within the
  ``stream_chunk_budget_ms`` budget per chunk. A ``block`` replaces the flagged text with the
  terminal ``event: error`` frame (code ``stream_chunk_blocked``) — the client never receives
  it; a ``modify`` rewrites it (edits are spread back over the events they touch).
* Every failure — timeout (past the budget), error, unusable answer, misconfiguration — passes
  the text (fail-open by contract) and sets
  ``langwatch.guardrail.stream_chunk_fail_open=<evaluator>: <reason>`` on the span before the
  chunk is relayed, however short the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tollway import RequestContext, Verdict
from tollway.guardrails import Direction, chunk_content, merge_texts
from tollway_guardrails import _metrics
from tollway_guardrails._config import EvaluatorRef
from tollway_guardrails._run import (
    MAX_REASON,
    Outcome,
    describe,
    evaluate_one,
    judge,
    make_request,
)
from tollway_guardrails._window import Window, split_rewrite

__all__ = ["StreamGuard"]

log = logging.getLogger("tollway.guardrails")
_DIRECTION: Direction = "stream_chunk"


def _blocks(outcome: Outcome) -> bool:
    return outcome.verdict is not None and outcome.verdict.decision == "block"


class StreamGuard:
    """The ``stream_chunk`` guardrails of one streaming request (a :class:`tollway.StreamFilter`,
    kept on ``ctx.stash``)."""

    __slots__ = (
        "_logged",
        "async_refs",
        "budget_s",
        "chunks_judged",
        "fail_open_count",
        "finished",
        "over_budget_ms",
        "sync_refs",
        "window",
    )

    def __init__(
        self,
        ctx: RequestContext,
        refs: tuple[EvaluatorRef, ...],
        budget_s: float,
        window_chars: int,
    ) -> None:
        self.sync_refs = tuple(r for r in refs if r.problem is None and r.sync is not None)
        self.async_refs = tuple(r for r in refs if r.problem is None and r.sync is None)
        self.budget_s = budget_s
        self.window = Window(ctx.endpoint, window_chars)
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

    # --- the stream filter ------------------------------------------------------------------

    async def feed(self, ctx: RequestContext, chunk: bytes) -> bytes | Verdict:
        """Judge a chunk with the held-back text; relay what may leave the window."""
        window = self.window
        if not window.add(chunk):
            return window.release()
        verdict = await self._judge(ctx)
        if verdict is not None and verdict.decision == "block":
            window.clear()
            return verdict
        return window.release()

    async def end(self, ctx: RequestContext) -> bytes:
        """The stream is over: everything held back (it was judged when it arrived)."""
        return self.window.drain()

    async def _judge(self, ctx: RequestContext) -> Verdict | None:
        original, members = self.window.streams()
        content = chunk_content(original)
        self.chunks_judged += 1
        pending: list[tuple[EvaluatorRef, asyncio.Task[Outcome]]] = []
        for ref in self.async_refs:
            request = make_request(ctx, ref, _DIRECTION, content, self.budget_s)
            pending.append((ref, asyncio.ensure_future(evaluate_one(ref, request, original))))
        outcomes: list[Outcome] = []
        try:
            if self.sync_refs:
                outcomes.extend(self._run_sync(ctx, content, original))
            if pending and not any(_blocks(o) for o in outcomes):
                await asyncio.wait([t for _, t in pending])
        finally:
            for _, task in pending:
                task.cancel()
        outcomes.extend(t.result() for _, t in pending if t.done() and not t.cancelled())
        versions: list[list[str]] = []
        names: list[str] = []
        for outcome in outcomes:
            ref = outcome.ref
            if outcome.failure is not None:
                self.fail_open(ctx, ref, outcome.failure)
                continue
            verdict = outcome.verdict
            assert verdict is not None
            _metrics.count(_DIRECTION, verdict.decision)
            if verdict.decision == "block":
                return self._block(ctx, verdict, ref)
            if outcome.texts is not None and outcome.texts != original:
                versions.append(outcome.texts)
                names.append(ref.name)
        if not versions:
            return None
        merged = merge_texts(original, versions)
        texts = self.window.texts
        for new, old, indexes in zip(merged, original, members, strict=True):
            if new != old:
                parts = split_rewrite([texts[i] for i in indexes], new)
                for i, part in zip(indexes, parts, strict=True):
                    texts[i] = part
        self.window.apply(texts)
        ctx.span_attributes["langwatch.guardrail.stream_chunk.decision"] = "modify"
        return Verdict("modify", "", ",".join(names))

    def _run_sync(
        self, ctx: RequestContext, content: dict[str, Any], original: list[str]
    ) -> list[Outcome]:
        started = time.perf_counter()
        out: list[Outcome] = []
        for ref in self.sync_refs:
            request = make_request(ctx, ref, _DIRECTION, content, self.budget_s)
            evaluate_sync = ref.sync
            assert evaluate_sync is not None
            try:
                answer = evaluate_sync(request)
            except Exception as exc:
                out.append(Outcome(ref, failure=f"error: {describe(exc)}"))
                continue
            outcome = judge(ref, _DIRECTION, answer, original)
            if outcome.failure is not None:
                outcome = Outcome(ref, failure=f"error: {outcome.failure}")
            out.append(outcome)
            if _blocks(outcome):
                break
        elapsed = time.perf_counter() - started
        if elapsed > self.budget_s:
            self._over_budget(ctx, elapsed)
        return out

    def _block(self, ctx: RequestContext, verdict: Verdict, ref: EvaluatorRef) -> Verdict:
        reason = verdict.reason or f"the response was blocked by guardrail evaluator {ref.name!r}"
        attrs = ctx.span_attributes
        attrs["langwatch.guardrail.stream_chunk.decision"] = "block"
        attrs["langwatch.guardrail.stream_chunk.blocked_by"] = ref.name
        attrs["langwatch.guardrail.stream_chunk.reason"] = reason[:MAX_REASON]
        return Verdict("block", reason, ref.name)

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
        """The request is settled (``account``): note how many windows were judged."""
        self.finished = True
        ctx.span_attributes["langwatch.guardrail.stream_chunk.chunks_judged"] = self.chunks_judged
