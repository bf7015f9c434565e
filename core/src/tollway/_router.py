"""The built-in router: the key's chain filtered to the providers serving the model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tollway._context import RequestContext
from tollway._markers import hookimpl
from tollway._qualified import parse_qualified_model
from tollway._types import RouteTarget
from tollway.routing import order

if TYPE_CHECKING:
    from tollway.gateway import Gateway

__all__ = ["Router"]

log = logging.getLogger("tollway.gateway")


class Router:
    """Built-in ``route``: the key's chain (:meth:`Gateway.routed_chain`) filtered to the
    providers that serve the model on this endpoint, in its strategy's order for this request."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @hookimpl(trylast=True)
    def route(self, ctx: RequestContext) -> list[RouteTarget]:
        model = ctx.model
        endpoint = ctx.endpoint
        entries, strategy = self.gateway.routed_chain(ctx.principal, endpoint)
        qualified = parse_qualified_model(model)
        if qualified is not None:
            named = [e for e in entries if qualified.names(e[0].type, e[0].name)]
            if named:
                entries, model = named, qualified.model
        served = [
            (p, pinned or model, weight)
            for p, pinned, weight in entries
            if endpoint in p.served and (pinned is not None or p.serves(model))
        ]
        if strategy != "ordered" and len(served) > 1:
            ctx.span_attributes["langwatch.routing.strategy"] = strategy
            walk = order(
                strategy,
                [p.key for p, _, _ in served],
                [w for _, _, w in served],
                self.gateway.live,
            )
            served = [served[i] for i in walk]
        return [RouteTarget(p.key, m) for p, m, _ in served]
