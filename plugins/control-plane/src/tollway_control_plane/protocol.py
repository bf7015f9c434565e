"""The internal gateway protocol (control-plane side), as a Quart blueprint.

``/api/internal/gateway/…``: ``resolve-key``, ``config/<vk_id>``, ``changes``, ``keys`` (the
auth cache bootstrap's pages of active keys), and for the
budgets plugin ``ledger`` (a gateway outbox's batch of spend entries) and ``spend`` (ledger sums
for the budget counters a gateway starts). Every request
must carry a fresh HMAC signature (:mod:`tollway.signing`, ``LW_GATEWAY_INTERNAL_SECRET``);
every response — errors and 304s included — is signed the same way (method and path of the
request, body of the response) so the gateway can verify it. Plus ``GET /api/health``.

The store is synchronous: views call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
from quart import Blueprint, Quart, Response, current_app, g, request

from tollway.signing import SignatureError, signed_headers, verify
from tollway_control_plane.runtime import ControlPlane
from tollway_control_plane.store import (
    KeyRejected,
    NotFound,
    ValidationError,
    check_ledger_entry,
    check_spend_query,
)

__all__ = [
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "JWT_TTL_SECONDS",
    "POLL_INTERVAL_SECONDS",
    "PREFIX",
    "blueprint",
    "state",
]

log = logging.getLogger("tollway.control_plane")

PREFIX = "/api/internal/gateway"
JWT_ISSUER = "tollway-control-plane"
JWT_AUDIENCE = "tollway-gateway"
JWT_TTL_SECONDS = 900
#: How often a waiting long poll looks at the store (the CLI may write from another process).
POLL_INTERVAL_SECONDS = 0.15
MAX_TIMEOUT_SECONDS = 30.0
#: Internal requests are small JSON documents …
MAX_BODY_BYTES = 64 * 1024
#: … except a gateway outbox's batch of ledger entries.
LEDGER_MAX_BODY_BYTES = 4 * 1024 * 1024
#: Entries per ``ledger`` batch, and queries per ``spend`` call.
MAX_LEDGER_ENTRIES = 2000
MAX_SPEND_QUERIES = 200
EXTENSION = "tollway_control_plane"

blueprint = Blueprint("tollway_control_plane_internal", __name__, url_prefix=PREFIX)
health = Blueprint("tollway_control_plane_health", __name__)


def state() -> ControlPlane:
    """The control plane serving this app (``mount`` may have been given a getter, for the
    embedded default, where the store opens when the gateway starts)."""
    ref = current_app.extensions[EXTENSION]
    cp: ControlPlane = ref if isinstance(ref, ControlPlane) else ref()
    return cp


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, type_: str, message: str, code: str | None = None) -> Response:
    err: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        err["code"] = code
    return _json(status, {"error": err})


@health.get("/api/health")
async def api_health() -> Response:
    return _json(200, {"status": "ok"})


class BodyTooLarge(Exception):
    """A request body over :data:`MAX_BODY_BYTES`."""


async def read_body(limit: int = 1024 * 1024) -> bytes:
    """The request body, refusing more than ``limit`` bytes *before* reading it all (in the
    embedded mode these routes share the gateway's public port and its uncapped app)."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def too_large() -> Response:
    return _error(413, "payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes")


@blueprint.before_request
async def _check_signature() -> Response | None:
    limit = LEDGER_MAX_BODY_BYTES if request.path == f"{PREFIX}/ledger" else MAX_BODY_BYTES
    try:
        body = await read_body(limit)
    except BodyTooLarge:
        return _error(413, "payload_too_large", f"the body is over {limit} bytes")
    g.tollway_body = body
    try:
        verify(
            state().secrets.internal,
            request.method,
            request.path,
            request.headers,  # type: ignore[arg-type]  # a Mapping[str, str] in practice
            body,
        )
    except SignatureError as exc:
        return _error(
            401,
            "invalid_signature",
            f"the internal request's signature was refused: {exc}",
        )
    return None


@blueprint.after_request
async def _sign_response(response: Response) -> Response:
    body = bytes(await response.get_data(as_text=False))
    response.headers.update(
        signed_headers(state().secrets.internal, request.method, request.path, body)
    )
    return response


@blueprint.post("/resolve-key")
async def resolve_key() -> Response:
    data: bytes = g.tollway_body
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = None
    presented = payload.get("key_presented") if isinstance(payload, dict) else None
    if not isinstance(presented, str) or not presented:
        return _error(
            400,
            "bad_request",
            'the body must be {"key_presented": "<secret>", "gateway_node_id": "<id>"}',
        )
    cp = state()
    try:
        key = await asyncio.to_thread(cp.store.resolve_secret, presented)
    except KeyRejected as exc:
        return _error(401, "invalid_api_key", exc.message, exc.code)
    token, expires = _issue_jwt(cp, key.id, key.revision, int(time.time()))
    node = payload.get("gateway_node_id") if isinstance(payload, dict) else None
    log.info(
        "resolve_key_served vk_id=%s gateway_node_id=%s",
        key.id,
        node,
        extra={"vk_id": key.id, "gateway_node_id": node},
    )
    return _json(
        200, {"vk_id": key.id, "revision": key.revision, "jwt": token, "expires_at": expires}
    )


def _issue_jwt(cp: ControlPlane, vk_id: str, revision: int, issued: int) -> tuple[str, int]:
    """The key's JWT (HS256, ``LW_GATEWAY_JWT_SECRET``, 15 min) and its expiry."""
    expires = issued + JWT_TTL_SECONDS
    token = jwt.encode(
        {
            "sub": vk_id,
            "rev": revision,
            "iat": issued,
            "exp": expires,
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
        },
        cp.secrets.jwt,
        algorithm="HS256",
    )
    return token, expires


def _bearer() -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def etag_for(vk_id: str, revision: int, body: bytes) -> str:
    """``"<vk_id>:<revision>:<first 16 hex of sha256(body)>"`` (quotes included)."""
    return f'"{vk_id}:{revision}:{hashlib.sha256(body).hexdigest()[:16]}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return etag in candidates or "*" in candidates


@blueprint.get("/config/<vk_id>")
async def config(vk_id: str) -> Response:
    cp = state()
    token = _bearer()
    if token is None:
        return _error(
            401,
            "invalid_token",
            "send the key's JWT from resolve-key as 'Authorization: Bearer <jwt>'",
        )
    try:
        claims = jwt.decode(
            token,
            cp.secrets.jwt,
            algorithms=["HS256"],
            audience=JWT_AUDIENCE,
            issuer=JWT_ISSUER,
            options={"require": ["sub", "exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        return _error(
            401,
            "invalid_token",
            f"the JWT was refused ({exc}); resolve the key again for a fresh one",
        )
    if claims.get("sub") != vk_id:
        return _error(
            401, "invalid_token", f"this JWT was issued for {claims.get('sub')}, not {vk_id}"
        )
    try:
        bundle = await asyncio.to_thread(cp.store.bundle, vk_id)
    except NotFound as exc:
        return _error(404, "not_found", exc.message)
    body = orjson.dumps(bundle)
    etag = etag_for(vk_id, bundle["revision"], body)
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status=304, headers={"ETag": etag})
    return Response(body, status=200, content_type="application/json", headers={"ETag": etag})


@blueprint.get("/changes")
async def changes() -> Response:
    cp = state()
    try:
        since = int(request.args.get("since", "-1"))
        timeout = float(request.args.get("timeout_s", "0"))
        if not math.isfinite(timeout):
            raise ValueError
    except ValueError:
        return _error(400, "bad_request", "since must be an integer and timeout_s a number")
    timeout = min(max(timeout, 0.0), MAX_TIMEOUT_SECONDS)
    current = await asyncio.to_thread(cp.store.max_change_id)
    if since < 0 or since > current:
        # No cursor yet — or a cursor from another store (it was reset): start from now.
        return _json(200, {"cursor": current, "events": []})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        events = await asyncio.to_thread(cp.store.changes_since, since)
        if events:
            return _json(200, {"cursor": events[-1].id, "events": [e.to_json() for e in events]})
        remaining = deadline - loop.time()
        if remaining <= 0 or cp.stopping():
            return _json(200, {"cursor": since, "events": []})
        await asyncio.sleep(min(POLL_INTERVAL_SECONDS, remaining))


#: Keys per page of ``keys`` (the auth cache bootstrap); a page carries their full bundles.
KEYS_PAGE_DEFAULT = 100
KEYS_PAGE_MAX = 500


@blueprint.get("/keys")
async def active_keys() -> Response:
    """The auth cache bootstrap: one page of active keys with their bundles.

    ``GET keys?cursor=&limit=`` → ``{"keys": [{"vk_id", "revision", "secret_hashes", "jwt",
    "expires_at", "etag", "bundle"}, …], "next_cursor": <id> | null}``. ``secret_hashes`` are
    the stored ``hex(HMAC-SHA256(pepper, secret))`` of the secrets that work now — what a
    gateway's auth cache is keyed by — so no secret ever travels. Signed like every internal
    call; the JWT is the one ``resolve-key`` would issue.
    """
    cp = state()
    cursor = request.args.get("cursor", "")
    try:
        limit = int(request.args.get("limit", str(KEYS_PAGE_DEFAULT)))
    except ValueError:
        return _error(400, "bad_request", "limit must be an integer")
    limit = min(max(limit, 1), KEYS_PAGE_MAX)

    def page() -> tuple[list[dict[str, Any]], str | None]:
        keys, next_cursor = cp.store.active_key_page(cursor, limit)
        out = []
        for key, hashes in keys:
            try:
                bundle = cp.store.bundle(key.id)
            except NotFound:  # deleted meanwhile
                continue
            out.append((key, hashes, bundle))
        docs = []
        issued = int(time.time())
        for key, hashes, bundle in out:
            token, expires = _issue_jwt(cp, key.id, key.revision, issued)
            body = orjson.dumps(bundle)
            docs.append(
                {
                    "vk_id": key.id,
                    "revision": key.revision,
                    "secret_hashes": hashes,
                    "jwt": token,
                    "expires_at": expires,
                    "etag": etag_for(key.id, bundle["revision"], body),
                    "bundle": bundle,
                }
            )
        return docs, next_cursor

    docs, next_cursor = await asyncio.to_thread(page)
    log.info(
        "keys_page_served keys=%d cursor=%s next_cursor=%s",
        len(docs),
        cursor or "-",
        next_cursor or "-",
    )
    return _json(200, {"keys": docs, "next_cursor": next_cursor})


def _json_body() -> Any:
    try:
        return orjson.loads(g.tollway_body)
    except orjson.JSONDecodeError:
        return None


@blueprint.post("/ledger")
async def ledger() -> Response:
    """A gateway outbox's batch: ``{"gateway_node_id": …, "entries": [<entry>, …]}`` → 200
    ``{"accepted": n, "inserted": k}`` once every entry is committed. Entries already
    recorded (same ``request_id``) are skipped, so a retried batch never debits twice."""
    doc = _json_body()
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return _error(400, "bad_request", 'the body must be {"entries": [ … ]}')
    if len(entries) > MAX_LEDGER_ENTRIES:
        return _error(413, "payload_too_large", f"at most {MAX_LEDGER_ENTRIES} entries per batch")
    node = doc.get("gateway_node_id")
    try:
        rows = [check_ledger_entry(e, f"entries[{i}]") for i, e in enumerate(entries)]
    except ValidationError as exc:
        return _error(400, "bad_request", exc.message)
    for row in rows:
        if row["gateway_node_id"] is None and isinstance(node, str):
            row["gateway_node_id"] = node[:512]
    inserted = await asyncio.to_thread(state().store.record_ledger, rows)
    return _json(200, {"accepted": len(rows), "inserted": inserted})


@blueprint.post("/spend")
async def spend() -> Response:
    """Ledger sums for budget counters a gateway (re)starts: ``{"queries": [{organization_id,
    scope_type, scope_id, since, until?}, …]}`` → 200 ``{"spend_micro_usd": [n, …]}``."""
    doc = _json_body()
    queries = doc.get("queries") if isinstance(doc, dict) else None
    if not isinstance(queries, list) or len(queries) > MAX_SPEND_QUERIES:
        return _error(
            400,
            "bad_request",
            f'the body must be {{"queries": [ … ]}} with at most {MAX_SPEND_QUERIES} queries',
        )
    try:
        checked = [check_spend_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
    except ValidationError as exc:
        return _error(400, "bad_request", exc.message)
    sums = await asyncio.to_thread(state().store.ledger_spend, checked)
    return _json(200, {"spend_micro_usd": sums})


def mount(app: Quart, cp: ControlPlane | Callable[[], ControlPlane], *, admin: bool = True) -> None:
    """Serve the control plane ``cp`` (or a getter for it) from ``app``: the internal
    protocol, ``/api/health`` and (``admin``) the admin REST API and the console."""
    app.extensions[EXTENSION] = cp
    app.register_blueprint(blueprint)
    app.register_blueprint(health)
    if admin:
        from tollway_control_plane.admin import blueprint as admin_blueprint
        from tollway_control_plane.console import blueprint as console_blueprint

        app.register_blueprint(admin_blueprint)
        app.register_blueprint(console_blueprint)  # /console: the same service, in a browser
