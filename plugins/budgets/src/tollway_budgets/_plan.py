"""What admission needs of a key, worked out once per key rather than per request.

A key's principal (and its ``extras["budgets"]`` list) is the same object for as long as its
bundle is cached (vk-auth) or the gateway runs (static keys), so a :class:`Plan` is kept per
principal object, checked by identity, and dropped with it (a refreshed bundle is a new
principal: a new plan, and the old one goes when the auth cache lets go of its principal). It
holds the key's parsed budgets, the fixed part of the reservation's description (the ledger
entry should the reservation ever be reclaimed), the counters per end user for the current
windows, and the prices the estimate uses per requested model.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import attrs
import orjson

from tollway import Principal
from tollway_budgets._budgets import Budget, Counter, counters_for, counters_valid
from tollway_budgets._prices import Prices

if TYPE_CHECKING:
    from tollway_budgets._state import State

__all__ = ["PLAN_LIMIT", "Plan"]

#: Entries a plan keeps per cache (end users, models) before it starts over.
PLAN_LIMIT = 1_000


@attrs.define(eq=False)
class Plan:
    #: The principal it is for (weakly: the plan must not keep a dropped bundle alive).
    principal: weakref.ref[Principal]
    #: ``principal.extras["budgets"]``, as the plan was built from it.
    raw: object
    budgets: tuple[Budget, ...]
    #: Whether any budget is an end user's (the request's end user must then be read).
    end_users: bool
    #: The description's fields that do not change per request, as the tail of a JSON object
    #: (``"organization_id":…,"gateway_node_id":…}``).
    meta_tail: bytes
    #: end user → (valid from, valid until (epoch µs), the counters then).
    counters: dict[str | None, tuple[int, int, list[Counter]]] = attrs.field(factory=dict)
    #: (requested model, endpoint) → (the model priced — after the key's alias —, the prices
    #: found for it before ``unknown_model_prices``).
    prices: dict[tuple[str, str], tuple[str, Prices | None]] = attrs.field(factory=dict)

    @classmethod
    def build(
        cls, principal: Principal, raw: object, budgets: tuple[Budget, ...], node_id: str
    ) -> Plan:
        fixed = orjson.dumps(
            {
                "organization_id": principal.organization_id,
                "team_id": principal.team_id,
                "project_id": principal.project_id,
                "vk_id": principal.key_id,
                "principal_id": principal.principal_id,
                "gateway_node_id": node_id,
            }
        )
        return cls(
            weakref.ref(principal),
            raw,
            budgets,
            any(b.scope_type == "end_user" for b in budgets),
            b"," + fixed[1:],
        )

    def counters_at(
        self,
        principal: Principal,
        end_user: str | None,
        at_us: int,
        prefix: str,
        grace_ms: int,
    ) -> list[Counter]:
        """:func:`~tollway_budgets._budgets.counters_for` the plan's key (reused while no
        window ends). The list is shared: never change it."""
        found = self.counters.get(end_user)
        if found is not None and found[0] <= at_us < found[1]:
            return found[2]
        counters = counters_for(self.budgets, principal, end_user, at_us, prefix, grace_ms)
        if len(self.counters) >= PLAN_LIMIT:
            self.counters.clear()
        lo, hi = counters_valid(counters, at_us)
        self.counters[end_user] = (lo, hi, counters)
        return counters

    def meta(self, created_at: str, end_user: str | None, model: str) -> bytes:
        """What a reclaimed reservation's ledger entry says about its request (JSON; see
        :func:`tollway_budgets._leases.bill_reclaimed`)."""
        head = orjson.dumps({"created_at": created_at, "end_user_id": end_user, "model": model})
        return head[:-1] + self.meta_tail


def plan_of(state: State, principal: Principal, raw: object) -> Plan:
    """The key's plan (raises as :meth:`State.budgets_of` does for unreadable budgets)."""
    plans = state.plans
    key = id(principal)
    plan = plans.get(key)
    if plan is not None and plan.principal() is principal and plan.raw is raw:
        return plan
    budgets = state.budgets_of(principal, raw)
    fresh = Plan.build(principal, raw, budgets, state.node_id)
    if plan is None or plan.principal() is not principal:
        # Forget the plan with its principal (before its id can be reused).
        weakref.finalize(principal, _forget, plans, key)
    plans[key] = fresh
    return fresh


def _forget(plans: dict[int, Plan], key: int) -> None:
    plan = plans.get(key)
    if plan is not None and plan.principal() is None:
        del plans[key]
