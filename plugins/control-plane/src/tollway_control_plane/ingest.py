"""Per-project OTLP ingest tokens and the standalone control plane's trace receiver,
``POST /api/otel/v1/traces`` (OTLP/HTTP, protobuf or JSON).

Every project has an ingest token. It is derived (HMAC-SHA256 keyed by the store's pepper)
from the project id and a generation number, so the config bundle of a project-scoped key can
carry it as ``extras.otel_auth_token`` without the store keeping it: the store keeps its SHA-256
only (table ``project_ingest_tokens``), to find the project a presented token belongs to.
``tollway scopes rotate-ingest-token project:ID`` bumps the generation; the old token stops at
once (gateways get the new one with their next bundle refresh).

Organization- and team-scoped keys have no project: their spans are filed under their
organization's ``internal_governance`` project (created on first use), whose token their bundle
carries.

The receiver checks, before storing anything: the token (401), the body size (413), the content
type (415), the encoding (400), that every span is a gateway request span
(``langwatch.gateway_request_id``, 400) and that no span claims another project or organization
than the token's (403). A refused batch stores nothing; each refusal is counted
(``control_plane_otel_batches_total{outcome}``, :mod:`._metrics`) and logged.

The embedded default's in-process sink files its spans by the same rule (:func:`file_spans`):
the bundle's token names the project, so an organization- or team-scoped key's spans land in
``internal_governance`` on both paths.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from base64 import urlsafe_b64encode
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
from quart import Blueprint, Response, request

from tollway_control_plane import _metrics
from tollway_control_plane._db import IntegrityError
from tollway_control_plane._util import format_time, now
from tollway_control_plane.store import Conflict, NotFound, Project, Store

if TYPE_CHECKING:
    from tollway_control_plane.runtime import ControlPlane
    from tollway_control_plane.store import VirtualKey
    from tollway_control_plane.traces import SpanRow

__all__ = [
    "GOVERNANCE_PROJECT",
    "MAX_OTLP_BODY_BYTES",
    "Refused",
    "blueprint",
    "bundle_token",
    "file_spans",
    "ingest_token",
    "project_for_token",
    "refused",
    "rotate_ingest_token",
    "store_spans",
    "token_project",
    "trace_project",
]

log = logging.getLogger("tollway_control_plane")

GOVERNANCE_PROJECT = "internal_governance"
MAX_OTLP_BODY_BYTES = 4 * 1024 * 1024
_PREFIX = "lw_it_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _derive(store: Store, project_id: str, generation: int) -> str:
    key = hmac.new(store._pepper, b"tollway ingest tokens", hashlib.sha256).digest()
    mac = hmac.new(key, f"{project_id}\0{generation}".encode(), hashlib.sha256).digest()
    return _PREFIX + urlsafe_b64encode(mac).decode().rstrip("=")


def _write(store: Store, project_id: str, generation: int) -> str:
    token = _derive(store, project_id, generation)
    ts = format_time(now())
    with store.db.transaction() as tx:
        changed = tx.execute(
            "UPDATE project_ingest_tokens SET token_hash = ?, generation = ?, updated_at = ? "
            "WHERE project_id = ?",
            (_hash(token), generation, ts, project_id),
        )
        if not changed:
            tx.execute(
                "INSERT INTO project_ingest_tokens (project_id, token_hash, generation, "
                "updated_at) VALUES (?, ?, ?, ?)",
                (project_id, _hash(token), generation, ts),
            )
    return token


def ingest_token(store: Store, project_id: str) -> str:
    """The project's current ingest token (its hash is recorded on first use)."""
    store.get_project(project_id)
    rows = store.db.query(
        "SELECT generation FROM project_ingest_tokens WHERE project_id = ?", (project_id,)
    )
    if rows:
        return _derive(store, project_id, int(rows[0]["generation"]))
    try:
        return _write(store, project_id, 1)
    except IntegrityError:  # another process wrote it first
        return ingest_token(store, project_id)


def rotate_ingest_token(store: Store, project_id: str) -> str:
    """A new ingest token for the project; the previous one stops working now."""
    store.get_project(project_id)
    rows = store.db.query(
        "SELECT generation FROM project_ingest_tokens WHERE project_id = ?", (project_id,)
    )
    generation = int(rows[0]["generation"]) + 1 if rows else 2
    return _write(store, project_id, generation)


def project_for_token(store: Store, token: str) -> Project | None:
    """The project whose current ingest token is ``token``."""
    if not token.startswith(_PREFIX):
        return None
    rows = store.db.query(
        "SELECT project_id FROM project_ingest_tokens WHERE token_hash = ?", (_hash(token),)
    )
    if not rows:
        return None
    try:
        return store.get_project(rows[0]["project_id"])
    except NotFound:
        return None


def governance_project(store: Store, organization_id: str) -> Project:
    """The organization's ``internal_governance`` project (created, with a team of the same
    name when the organization has none, on first use)."""
    for project in store.list_projects():
        if project.organization_id == organization_id and project.name == GOVERNANCE_PROJECT:
            return project
    teams = [t for t in store.list_teams() if t.organization_id == organization_id]
    team = next((t for t in teams if t.name == GOVERNANCE_PROJECT), None) or (
        teams[0] if teams else None
    )
    try:
        if team is None:
            team = store.create_team(GOVERNANCE_PROJECT, organization_id)
        return store.create_project(GOVERNANCE_PROJECT, team.id)
    except Conflict:  # created concurrently
        return governance_project(store, organization_id)


def trace_project(store: Store, key: VirtualKey) -> Project:
    """The project a key's spans are filed under: its own, or its organization's
    ``internal_governance`` project."""
    if key.project_id:
        return store.get_project(key.project_id)
    return governance_project(store, key.organization_id)


def bundle_token(store: Store, key: VirtualKey) -> str:
    """``extras.otel_auth_token`` of a key's config bundle."""
    return ingest_token(store, trace_project(store, key).id)


# --- filing spans (both paths) -------------------------------------------------------------------


class Refused(Exception):
    """A batch of spans that is not stored; the receiver answers ``status`` with ``reason``."""

    def __init__(self, status: int, reason: str, message: str, project_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.project_id = project_id


def token_project(store: Store, token: str) -> Project:
    """The project of an ingest token; raises :class:`Refused` (401) when it is none's."""
    project = project_for_token(store, token) if token else None
    if project is None:
        raise Refused(
            401,
            "invalid_token",
            "send the project's ingest token as X-Auth-Token (the key bundle's otel_auth_token; "
            "rotate with 'tollway scopes rotate-ingest-token project:ID')",
        )
    return project


def file_spans(store: Store, token: str, rows: Sequence[SpanRow]) -> list[SpanRow]:
    """``rows`` filed under the project whose ingest token is ``token``: a span without a
    project (an organization- or team-scoped key's) gets the token's project — its
    organization's ``internal_governance`` project, since that is the token its key's bundle
    carries. The one rule for the standalone receiver and the embedded sink.

    Raises :class:`Refused` when the token is not a project's current one (401), a span is not
    a gateway request span (400), or a span claims another project or organization (403)."""
    project = token_project(store, token)
    missing = sum(1 for r in rows if not r.request_id)
    if missing:
        raise Refused(
            400,
            "not_gateway_spans",
            f"{missing} of {len(rows)} spans have no langwatch.gateway_request_id attribute: "
            "this endpoint takes Tollway gateway request spans only",
            project.id,
        )
    for row in rows:
        claimed = row.project_id
        org = row.attributes.get("langwatch.organization_id")
        if (claimed and claimed != project.id) or (org and org != project.organization_id):
            raise Refused(
                403,
                "wrong_project",
                f"span {row.request_id} belongs to project {claimed or '-'} / organization "
                f"{org or '-'}; this token writes to project {project.id} only",
                project.id,
            )
    return [r if r.project_id else r.with_project(project.id) for r in rows]


def refused(exc: Refused, spans: int = 0) -> None:
    """Count and log a refused batch."""
    _metrics.batch(exc.reason, other=spans)
    log.warning(
        "otel_ingest_refused reason=%s status=%d project_id=%s %s",
        exc.reason,
        exc.status,
        exc.project_id or "-",
        exc.message,
    )


def store_spans(cp: ControlPlane, rows: Sequence[SpanRow]) -> int:
    """Store filed ``rows`` and count the batch; returns how many were new. A store failure is
    counted (``store_failed``, its spans ``dropped``) and raised."""
    from tollway_control_plane.traces import span_store

    try:
        added = span_store(cp).insert(rows)
    except Exception:
        _metrics.batch("store_failed", other=len(rows))
        raise
    _metrics.batch("accepted", stored=added, duplicate=len(rows) - added)
    return added


# --- the receiver -------------------------------------------------------------------------------

blueprint = Blueprint("tollway_control_plane_otel", __name__, url_prefix="/api/otel")


def _refuse(exc: Refused, spans: int = 0) -> Response:
    refused(exc, spans)
    body = {"error": {"type": exc.reason, "message": exc.message}}
    return Response(orjson.dumps(body), status=exc.status, content_type="application/json")


def _ok(content_type: str) -> Response:
    if "json" in content_type:
        return Response(b"{}", status=200, content_type="application/json")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    return Response(
        ExportTraceServiceResponse().SerializeToString(),
        status=200,
        content_type="application/x-protobuf",
    )


def _ingest(cp: ControlPlane, token: str, body: bytes, content_type: str) -> Response:
    from tollway_control_plane.traces import OtlpError, decode_otlp

    store: Store = cp.store
    rows: list[SpanRow] = []
    try:
        project = token_project(store, token)
        try:
            rows = decode_otlp(body, content_type)
        except OtlpError as exc:
            raise Refused(400, "bad_request", str(exc), project.id) from None
        filed = file_spans(store, token, rows)
    except Refused as exc:
        return _refuse(exc, len(rows))
    try:
        store_spans(cp, filed)
    except Exception as exc:
        log.exception("otel_ingest_store_failed spans=%d", len(filed))
        body_ = {
            "error": {
                "type": "store_failed",
                "message": f"the control plane could not store the spans ({type(exc).__name__})",
            }
        }
        return Response(orjson.dumps(body_), status=503, content_type="application/json")
    return _ok(content_type)


@blueprint.post("/v1/traces")
async def receive_traces() -> Response:
    from tollway_control_plane.protocol import BodyTooLarge, read_body, state

    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in ("application/x-protobuf", "application/json"):
        return _refuse(
            Refused(
                415,
                "unsupported_media_type",
                f"content-type {content_type or '(none)'!r}: send application/x-protobuf or "
                "application/json (OTLP/HTTP)",
            )
        )
    try:
        body = await read_body(MAX_OTLP_BODY_BYTES)
    except BodyTooLarge:
        return _refuse(
            Refused(
                413,
                "payload_too_large",
                f"the batch is over {MAX_OTLP_BODY_BYTES} bytes; send less",
            )
        )
    token = request.headers.get("x-auth-token", "").strip()
    return await asyncio.to_thread(_ingest, state(), token, body, content_type)
