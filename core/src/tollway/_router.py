"""The built-in router: the key's chain filtered to the providers serving the model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tollway._context import RequestContext
from tollway._markers import hookimpl
from tollway._qualified import parse_qualified_model
from tollway._types import RouteTarget

if TYPE_CHECKING:
    from tollway.gateway import Gateway

__all__ = ["Router"]

log = logging.getLogger("tollway.gateway")


class Router:
    """Built-in ``route``: the key's chain (:meth:`Gateway.chain`) filtered to the providers that
    serve the model on this endpoint."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @hookimpl(trylast=True)
    def route(self, ctx: RequestContext) -> list[RouteTarget]:
        model = ctx.model
        endpoint = ctx.endpoint
        entries = self.gateway.chain(ctx.principal, endpoint)
        qualified = parse_qualified_model(model)
        if qualified is not None:
            named = [(p, m) for p, m in entries if qualified.names(p.type, p.name)]
            if named:
                entries, model = named, qualified.model
        return [
            RouteTarget(p.key, pinned or model)
            for p, pinned in entries
            if endpoint in p.endpoints and (pinned is not None or p.serves(model))
        ]
