"""Spend budgets (SPEC §4): cost per request, budget enforcement, and the spend ledger.

How it fits the pipeline (authenticate → admit → pre_guardrail → route → dispatch → account):

* ``admit`` (``trylast``: after rate limits, policy rules, cache mode and model access — see
  docs/plugins/budgets.md for the resulting order) reads the key's budgets
  (``principal.extras["budgets"]``), refuses with 402 ``budget_exceeded`` when a ``block``
  budget's spent + reserved ≥ its limit, adds ``X-LangWatch-Budget-Warning`` from 80 %, and
  reserves the request's *estimated* cost on every applicable budget — one atomic Redis script
  (or in-process without Redis). The script call is deferred to the request's Redis batch
  (:mod:`tollway.redis_batch`: one round trip with the other plugins' calls) and the decision
  made when its reply is in.
* ``post_guardrail`` / ``on_stream_chunk`` spool the call's ledger entry before a complete
  answer reaches the client (so a ``kill -9`` right after cannot lose it).
* ``account`` (``tryfirst``) computes the exact cost, spools the entry if not yet done (errors
  with usage, client disconnects — a cut stream is billed for what was produced), sets
  ``ctx.cost_micros`` and settles the reservation to the actual cost (with Redis through the
  settlement queue, off the request's path).
* The durable outbox (:mod:`tollway_budgets._outbox`) hands the spooled entries to the control
  plane's ledger, which records each request id once.
"""

from __future__ import annotations

from tollway_budgets._admission import DECISION, WARNING_HEADER, admit
from tollway_budgets._budgets import Budget
from tollway_budgets._estimate import estimate_micros
from tollway_budgets._plugin import (
    gateway_started,
    gateway_stopping,
    readiness_checks,
    register_routes,
    register_settings,
)
from tollway_budgets._prices import Prices, PriceTable, cost_micros
from tollway_budgets._settings import BudgetSettings
from tollway_budgets._settle import account, on_stream_chunk, post_guardrail
from tollway_budgets._windows import window_bounds

__all__ = [
    "DECISION",
    "WARNING_HEADER",
    "Budget",
    "BudgetSettings",
    "PriceTable",
    "Prices",
    "account",
    "admit",
    "cost_micros",
    "estimate_micros",
    "gateway_started",
    "gateway_stopping",
    "on_stream_chunk",
    "post_guardrail",
    "readiness_checks",
    "register_routes",
    "register_settings",
    "window_of",
]

__version__ = "0.1.0"


def window_of(budget: Budget, at_us: int) -> tuple[int, int | None]:
    """The ``[start, end)`` (epoch µs) of ``budget``'s window containing ``at_us``."""
    return window_bounds(budget.window, at_us)
