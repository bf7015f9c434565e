"""Stored responses (the Responses API's ``store``): what ``POST /v1/responses`` created, served
back by id.

Routes::

    GET    /v1/responses/{id}              the response as created (404 when unknown)
    DELETE /v1/responses/{id}              {"id", "object": "response.deleted", "deleted": true}
    POST   /v1/responses/{id}/cancel       the response with status "cancelled"
    GET    /v1/responses/{id}/input_items  {"object": "list", "data": the input as items}

The last 1000 stored responses are kept (``store: false`` ones are not).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tollway_simulator.common import Call, JsonReply, Reply, StreamReply, dumps
from tollway_simulator.errors import error_reply, provider_headers

if TYPE_CHECKING:
    from tollway_simulator.server import Simulator

MAX_STORED = 1000


class Store:
    """Stored responses by id, with their input items."""

    def __init__(self) -> None:
        self.responses: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = (
            OrderedDict()
        )

    def keep(self, call: Call, reply: Reply) -> None:
        """Remember the response ``reply`` carries (complete, or in its completed event)."""
        doc: Any = None
        if isinstance(reply, JsonReply):
            if reply.status != 200:
                return
            doc = orjson.loads(reply.body)
        else:
            for event in reversed(reply.events):
                if b"response.completed" in event:
                    data = event.split(b"data: ", 1)[-1]
                    doc = orjson.loads(data).get("response")
                    break
        if not isinstance(doc, dict) or doc.get("store") is False or "id" not in doc:
            return
        raw = call.data.get("input")
        items = (
            [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
            if isinstance(raw, str)
            else [i for i in raw if isinstance(i, dict)]
            if isinstance(raw, list)
            else []
        )
        for n, item in enumerate(items):
            item.setdefault("id", f"msg_{doc['id'][5:]}_{n}")
        self.responses[doc["id"]] = (doc, items)
        if len(self.responses) > MAX_STORED:
            self.responses.popitem(last=False)


def _not_found(response_id: str) -> JsonReply:
    return error_reply(
        "openai",
        404,
        f"Response with id '{response_id}' not found.",
        "invalid_request_error",
        None,
        None,
    )


def add_routes(sim: Simulator, router: web.UrlDispatcher) -> None:
    """Add this wire's routes to the simulator's router."""
    store = sim.stored

    def handler(action: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            response_id = request.match_info["response_id"]

            def answer(_call: Call) -> Reply:
                found = store.responses.get(response_id)
                if found is None:
                    return _not_found(response_id)
                doc, items = found
                headers = provider_headers("openai")
                if action == "delete":
                    del store.responses[response_id]
                    body: Any = {"id": response_id, "object": "response.deleted", "deleted": True}
                elif action == "cancel":
                    body = {**doc, "status": "cancelled"}
                elif action == "input_items":
                    body = {
                        "object": "list",
                        "data": items,
                        "first_id": items[0]["id"] if items else None,
                        "last_id": items[-1]["id"] if items else None,
                        "has_more": False,
                    }
                elif request.query.get("stream") == "true":
                    event = b"event: response.completed\ndata: " + dumps(
                        {"type": "response.completed", "sequence_number": 0, "response": doc}
                    )
                    return StreamReply([event + b"\n\n"], headers)
                else:
                    body = doc
                return JsonReply(200, dumps(body), headers)

            return await sim.serve(request, "openai", answer, parse_json=False)

        return handle

    path = "/v1/responses/{response_id}"
    router.add_get(path, handler("retrieve"))
    router.add_delete(path, handler("delete"))
    router.add_post(path + "/cancel", handler("cancel"))
    router.add_get(path + "/input_items", handler("input_items"))
