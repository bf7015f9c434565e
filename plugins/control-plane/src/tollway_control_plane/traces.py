"""Request spans: decoding OTLP, storing gateway request spans, and reading them back as
request records (``tollway requests``, ``/api/admin/requests``).

Spans arrive two ways, through the same :func:`decode_otlp` and :meth:`SpanStore.insert`:

* in-process, from this gateway's telemetry plugin, when the gateway serves its own control
  plane: :class:`EmbeddedSpanSink` is offered through the core's ``register_span_sinks`` hook
  (``tollway.spans``), so the spans never leave the process;
* over OTLP/HTTP at ``/api/otel/v1/traces`` on a standalone control plane (:mod:`.receiver`).

Writes happen off the request path (the telemetry plugin's bounded batch queue and its worker
thread; a full queue drops and counts), in one short transaction per batch that does not take
the change feed's lock. Retention: rows older than ``TOLLWAY_TRACE_RETENTION_DAYS`` (default 7)
and the oldest past ``TOLLWAY_TRACE_MAX_SPANS`` (default 1,000,000) are deleted by the writer,
at most once a minute.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from tollway_control_plane._util import dumps, format_time, loads, now
from tollway_control_plane.store import ValidationError

if TYPE_CHECKING:
    from tollway_control_plane._db import Database
    from tollway_control_plane.runtime import ControlPlane

__all__ = [
    "DEFAULT_MAX_SPANS",
    "DEFAULT_RETENTION_DAYS",
    "EmbeddedSpanSink",
    "OtlpError",
    "SpanRow",
    "SpanStore",
    "decode_otlp",
    "parse_since",
    "request_record",
    "span_store",
]

log = logging.getLogger("tollway_control_plane")

DEFAULT_RETENTION_DAYS = 7.0
DEFAULT_MAX_SPANS = 1_000_000
_PRUNE_EVERY_S = 60.0
_REQUEST_ID = "langwatch.gateway_request_id"
_MAX_LIST = 1000
_COLUMNS = (
    "request_id, trace_id, span_id, parent_span_id, name, organization_id, project_id, vk_id, "
    "model, served_model, provider, status_code, error_type, outcome, started_at, duration_ms, "
    "attributes, events, resource, received_at"
)

_SELECT = ", ".join(f"s.{c.strip()}" for c in _COLUMNS.split(",")) + ", k.display_prefix"


class OtlpError(Exception):
    """An OTLP request that cannot be decoded (the receiver answers 400)."""


# --- decoding -----------------------------------------------------------------------------------


@attrs.frozen
class SpanRow:
    """One gateway request span, ready to store."""

    request_id: str | None
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    resource: dict[str, Any]
    status_error: bool

    @property
    def project_id(self) -> str | None:
        value = self.attributes.get("langwatch.project_id")
        return value if isinstance(value, str) and value else None

    def with_project(self, project_id: str) -> SpanRow:
        attributes = {**self.attributes, "langwatch.project_id": project_id}
        return attrs.evolve(self, attributes=attributes)


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in items}


_HEX_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_FIELDS and isinstance(value, str) and value:
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise OtlpError(f"{key}: {value[:40]!r} is not hex") from None
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def decode_otlp(body: bytes, content_type: str = "application/x-protobuf") -> list[SpanRow]:
    """Every span of an OTLP/HTTP ``ExportTraceServiceRequest`` (protobuf, or JSON when
    ``content_type`` says so). Raises :class:`OtlpError` when the body is not one."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    message = ExportTraceServiceRequest()
    if "json" in content_type.lower():
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise OtlpError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise OtlpError("the body is not an OTLP ExportTraceServiceRequest JSON object")
        _hex_ids_to_base64(data)
        try:
            json_format.ParseDict(data, message, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise OtlpError(f"the body is not an OTLP ExportTraceServiceRequest: {exc}") from None
    else:
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpError(f"the body is not a protobuf OTLP trace request: {exc}") from None
    rows: list[SpanRow] = []
    for resource_spans in message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    raise OtlpError("a span has no valid trace_id (16 bytes) / span_id (8 bytes)")
                attributes = _attributes(span.attributes)
                request_id = attributes.get(_REQUEST_ID)
                rows.append(
                    SpanRow(
                        request_id=request_id if isinstance(request_id, str) else None,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=attributes,
                        events=[
                            {
                                "name": e.name,
                                "time_unix_nano": e.time_unix_nano,
                                "attributes": _attributes(e.attributes),
                            }
                            for e in span.events
                        ],
                        resource=resource,
                        status_error=span.status.code == 2,  # STATUS_CODE_ERROR
                    )
                )
    return rows


# --- the table ----------------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _outcome(row: SpanRow) -> str:
    status = _int(row.attributes.get("http.response.status_code"))
    if row.status_error or row.attributes.get("error.type") or (status or 0) >= 400:
        return "error"
    return "ok"


def _time(ns: int) -> str:
    return format_time(datetime.fromtimestamp(ns / 1e9, UTC))


def _env_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}: must be positive")
    return value


class SpanStore:
    """The ``request_spans`` table of a control-plane store (thread-safe)."""

    def __init__(
        self,
        db: Database,
        *,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        max_spans: int = DEFAULT_MAX_SPANS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.retention_days = retention_days
        self.max_spans = max_spans
        self._clock = clock
        self._last_prune: float | None = None
        self._lock = threading.Lock()
        #: Spans stored / refused by reason / deleted by retention (for logs and tests).
        self.stored = 0
        self.pruned = 0

    @classmethod
    def from_env(cls, db: Database, env: Mapping[str, str] | None = None) -> SpanStore:
        env = os.environ if env is None else env
        return cls(
            db,
            retention_days=_env_number(env, "TOLLWAY_TRACE_RETENTION_DAYS", DEFAULT_RETENTION_DAYS),
            max_spans=int(_env_number(env, "TOLLWAY_TRACE_MAX_SPANS", DEFAULT_MAX_SPANS)),
        )

    def insert(self, rows: Sequence[SpanRow]) -> int:
        """Store ``rows`` (a span already stored is skipped); returns how many were new. Rows
        without a request id are not gateway request spans: skip them before."""
        if not rows:
            return 0
        received = format_time(now())
        values = [
            (
                row.request_id or "",
                row.trace_id,
                row.span_id,
                row.parent_span_id,
                row.name[:512],
                _str(row.attributes.get("langwatch.organization_id")),
                row.project_id,
                _str(row.attributes.get("langwatch.virtual_key_id")),
                _str(row.attributes.get("gen_ai.request.model")),
                _str(row.attributes.get("gen_ai.response.model")),
                _str(row.attributes.get("langwatch.provider")),
                _int(row.attributes.get("http.response.status_code")),
                _str(row.attributes.get("error.type")),
                _outcome(row),
                _time(row.start_ns),
                max(0.0, (row.end_ns - row.start_ns) / 1e6),
                dumps(row.attributes),
                dumps(row.events),
                dumps(row.resource),
                received,
            )
            for row in rows
        ]
        sql = (
            f"INSERT INTO request_spans ({_COLUMNS}) VALUES ({', '.join('?' * 20)}) "
            "ON CONFLICT (trace_id, span_id) DO NOTHING"
        )
        added = 0
        with self.db.side_transaction() as tx:
            for value in values:
                added += tx.execute(sql, value)
        self.stored += added
        self.maybe_prune()
        return added

    def maybe_prune(self) -> None:
        """Apply retention when the last pass is over a minute old."""
        at = self._clock()
        with self._lock:
            if self._last_prune is not None and at - self._last_prune < _PRUNE_EVERY_S:
                return
            self._last_prune = at
        try:
            self.prune()
        except Exception:
            log.exception("request_spans_prune_failed")

    def prune(self) -> int:
        """Delete spans past the retention and the oldest past the size cap; returns how many."""
        cutoff = format_time(now() - timedelta(days=self.retention_days))
        deleted = 0
        with self.db.side_transaction() as tx:
            deleted += tx.execute("DELETE FROM request_spans WHERE started_at < ?", (cutoff,))
            over = tx.query(
                "SELECT id FROM request_spans ORDER BY id DESC LIMIT 1 OFFSET ?",
                (self.max_spans,),
            )
            if over:
                deleted += tx.execute("DELETE FROM request_spans WHERE id <= ?", (over[0]["id"],))
        self.pruned += deleted
        return deleted

    # --- reading ---------------------------------------------------------------------------

    def get(self, request_id: str) -> list[dict[str, Any]]:
        """The stored rows of a request (usually one), oldest first, each with its key's
        ``display_prefix`` from the store's key row."""
        return self.db.query(
            f"SELECT {_SELECT} FROM request_spans s LEFT JOIN virtual_keys k ON k.id = s.vk_id "
            "WHERE s.request_id = ? ORDER BY s.started_at",
            (request_id,),
        )

    def search(
        self,
        *,
        vk_id: str | None = None,
        project_id: str | None = None,
        model: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
        project_ids: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows, newest first, matching every filter given. ``status`` is ``ok``, ``error``, an
        HTTP status (``429``) or an error type (``rate_limit_exceeded``)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("vk_id", vk_id), ("project_id", project_id), ("model", model)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if status:
            if status in ("ok", "error"):
                where.append("outcome = ?")
                params.append(status)
            elif status.isdigit():
                where.append("status_code = ?")
                params.append(int(status))
            else:
                where.append("error_type = ?")
                params.append(status)
        if since:
            where.append("started_at >= ?")
            params.append(since)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        if project_ids is not None:
            if not project_ids:
                return []
            where.append(f"project_id IN ({', '.join('?' for _ in project_ids)})")
            params.extend(project_ids)
        sql = (
            f"SELECT s.id, {_SELECT} FROM request_spans s "
            "LEFT JOIN virtual_keys k ON k.id = s.vk_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(f"s.{w}" for w in where)
        sql += " ORDER BY s.started_at DESC, s.id DESC LIMIT ?"
        params.append(max(1, min(limit, _MAX_LIST)))
        return self.db.query(sql, params)


def span_store(cp: ControlPlane) -> SpanStore:
    """The :class:`SpanStore` of an open control plane (created on first use)."""
    found = cp.extras.get("span_store")
    if isinstance(found, SpanStore) and found.db is cp.store.db:
        return found
    spans = SpanStore.from_env(cp.store.db)
    cp.extras["span_store"] = spans
    return spans


# --- request records ----------------------------------------------------------------------------

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | None) -> str | None:
    """``1h``, ``30m``, ``2d`` (ago) or an ISO-8601 time → the stored time format."""
    if text is None or not text.strip():
        return None
    match = _SINCE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return format_time(now() - timedelta(seconds=seconds))
    from tollway_control_plane._util import parse_time

    try:
        return format_time(parse_time(text))
    except ValueError:
        raise ValidationError(
            f"since: {text!r} is neither a duration (30m, 1h, 2d) nor an ISO-8601 time"
        ) from None


def _num(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    return value if isinstance(value, int | float) else None


_DIRECTIONS = ("pre", "post", "stream_chunk")


def _verdict(direction: str, evaluator: str, verdict: str, reason: Any) -> dict[str, Any]:
    return {"direction": direction, "evaluator": evaluator, "verdict": verdict, "reason": reason}


def guardrail_verdicts(a: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every guardrail verdict a span records, in order (``pre``, ``post``, ``stream_chunk``):
    ``{direction, evaluator, verdict, reason}``. ``reason`` is set for a block (the evaluator's
    explanation, as the client got it) and a fail-open (why the evaluator failed); the judged
    content is never on the span."""
    out: list[dict[str, Any]] = []
    for direction in _DIRECTIONS:
        base = f"langwatch.guardrail.{direction}"
        blocked_by = a.get(f"{base}.blocked_by")
        fail_open: dict[str, str] = {}
        raw_fail_open = a.get(f"{base}_fail_open")
        if isinstance(raw_fail_open, str) and ": " in raw_fail_open:
            name, _, why = raw_fail_open.partition(": ")
            fail_open[name] = why
        seen: set[str] = set()
        verdicts = a.get(f"{base}.verdicts")
        for item in verdicts.split(",") if isinstance(verdicts, str) and verdicts else ():
            evaluator, _, verdict = item.rpartition("=")
            seen.add(evaluator)
            reason = None
            if verdict == "block" and evaluator == blocked_by:
                reason = a.get(f"{base}.reason")
            elif verdict == "error" and evaluator in fail_open:
                verdict, reason = "fail_open", fail_open[evaluator]
            out.append(_verdict(direction, evaluator, verdict, reason))
        if isinstance(blocked_by, str) and blocked_by not in seen:
            # stream_chunk records the block only (one verdict per chunk would be too many).
            out.append(_verdict(direction, blocked_by, "block", a.get(f"{base}.reason")))
        for evaluator, why in fail_open.items():
            if evaluator not in seen and evaluator != blocked_by:
                out.append(_verdict(direction, evaluator, "fail_open", why))
    return out


def request_record(row: Mapping[str, Any], *, detail: bool = True) -> dict[str, Any]:
    """What ``tollway requests get`` shows for one stored span (``detail=False``: the summary
    ``requests list`` shows). Never a secret: the key's id and display prefix only."""
    a: dict[str, Any] = loads(row["attributes"]) or {}
    record: dict[str, Any] = {
        "request_id": row["request_id"],
        "started_at": row["started_at"],
        "outcome": row["outcome"],
        "status_code": row["status_code"],
        "error_type": row["error_type"],
        "model": row["model"],
        "served_model": row["served_model"],
        "provider": row["provider"],
        "provider_type": a.get("gen_ai.system"),
        "virtual_key_id": row["vk_id"],
        # Spans never carry it; the store's key row does (None for keys not in the store).
        "virtual_key_display_prefix": row.get("display_prefix"),
        "project_id": row["project_id"],
        "duration_ms": round(float(row["duration_ms"]), 3),
        "upstream_ms": _num(a.get("langwatch.upstream.duration_ms")),
        "gateway_overhead_ms": _num(a.get("langwatch.gateway.overhead_ms")),
        "tokens": {
            "input": _num(a.get("gen_ai.usage.input_tokens")),
            "output": _num(a.get("gen_ai.usage.output_tokens")),
            "cache_read": _num(a.get("gen_ai.usage.cache_read.input_tokens")),
            "cache_write": _num(a.get("gen_ai.usage.cache_creation.input_tokens")),
            "reasoning": _num(a.get("langwatch.usage.reasoning_tokens")) or 0,
        },
        "cost_usd": _num(a.get("langwatch.cost_usd")),
        "cache": a.get("langwatch.cache.outcome"),
        "stream": bool(a.get("langwatch.stream")),
    }
    if not detail:
        record["id"] = row.get("id")
        return record
    events: list[dict[str, Any]] = loads(row["events"]) or []
    attempts = []
    for event in events:
        if event.get("name") != "langwatch.provider_attempt":
            continue
        ea = event.get("attributes") or {}
        attempts.append(
            {
                "index": ea.get("langwatch.attempt.index"),
                "credential_id": ea.get("langwatch.credential.id", ea.get("langwatch.provider")),
                "credential_name": ea.get("langwatch.credential.name"),
                "provider_type": ea.get("gen_ai.system"),
                "model": ea.get("gen_ai.request.model"),
                "outcome": ea.get("langwatch.attempt.outcome"),
                "status_code": ea.get("http.response.status_code"),
                "duration_ms": ea.get("langwatch.attempt.duration_ms"),
                "fallback_reason": ea.get("langwatch.fallback.reason"),
            }
        )
    decisions: dict[str, Any] = {
        prefix.split(".")[1]: {k[len(prefix) :]: v for k, v in a.items() if k.startswith(prefix)}
        for prefix in ("langwatch.guardrail.", "langwatch.budget.", "langwatch.rate_limit.")
    }
    decisions["guardrails"] = guardrail_verdicts(a)
    record.update(
        {
            "trace_id": row["trace_id"],
            "span_id": row["span_id"],
            "parent_span_id": row["parent_span_id"],
            "endpoint": a.get("langwatch.endpoint"),
            "team_id": a.get("langwatch.team_id"),
            "organization_id": row["organization_id"],
            "first_chunk_ms": _num(a.get("langwatch.stream.first_chunk_ms")),
            "stream_chunks": _num(a.get("langwatch.stream.chunk_count")),
            "stream_terminated_at_chunk": _num(a.get("langwatch.stream.terminated_at_chunk")),
            "client_disconnected": bool(a.get("langwatch.client_disconnected")),
            "attempts": attempts,
            "decisions": {k: v for k, v in decisions.items() if v},
            "received_at": row["received_at"],
            "attributes": a,
        }
    )
    return record


# --- the embedded sink --------------------------------------------------------------------------


class EmbeddedSpanSink:
    """A :class:`tollway.spans.SpanSink` writing this gateway's own spans to the embedded
    control plane's store (offered through ``register_span_sinks``).

    Spans are filed as the standalone receiver files them (:func:`~.ingest.file_spans`): the
    key bundle's ingest token, which the telemetry plugin passes along, names the project — an
    organization- or team-scoped key's is its organization's ``internal_governance``. Spans
    with no token (a key from another plugin) are stored as they are."""

    name = "control-plane"

    def __init__(self, control_plane: Callable[[], ControlPlane | None]) -> None:
        from tollway_control_plane import _metrics  # noqa: F401 (on /metrics from the start)

        self._control_plane = control_plane

    def export(self, body: bytes, auth_token: str | None) -> None:
        cp = self._control_plane()
        if cp is None:
            raise RuntimeError("the embedded control plane is not open")
        from tollway_control_plane.ingest import Refused, file_spans, refused, store_spans

        rows = [r for r in decode_otlp(body) if r.request_id]
        if auth_token:
            try:
                rows = file_spans(cp.store, auth_token, rows)
            except Refused as exc:
                refused(exc, len(rows))
                raise RuntimeError(f"spans refused: {exc.reason}: {exc.message}") from None
        store_spans(cp, rows)


# --- queries the CLI and the admin API share ----------------------------------------------------


def get_request(
    spans: SpanStore, request_id: str, *, projects: Sequence[str] | None = None
) -> dict[str, Any]:
    """The record of one request by its ``grq_…`` id (``X-LangWatch-Request-Id``); raises
    :class:`~tollway_control_plane.store.NotFound` (also when ``projects`` is given and the
    request is in none of them, with the same message)."""
    from tollway_control_plane.store import NotFound

    # A NUL cannot be in a stored id (and PostgreSQL refuses it in a parameter).
    rows = [] if "\x00" in request_id else spans.get(request_id.strip())
    if rows and projects is not None and rows[-1]["project_id"] not in set(projects):
        rows = []
    if not rows:
        raise NotFound(
            f"no request {request_id!r} is stored (spans are kept "
            f"{spans.retention_days:g} days; a request shows up about a second after it ends)"
        )
    record = request_record(rows[-1])
    if len(rows) > 1:
        record["other_spans"] = [request_record(r) for r in rows[:-1]]
    return record


LIST_FILTERS = ("key", "project", "model", "status", "since", "limit")


def list_requests(
    spans: SpanStore, filters: Mapping[str, Any], *, projects: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Request summaries, newest first. ``filters``: ``key`` (a virtual key id), ``project``,
    ``model`` (as asked), ``status`` (``ok``, ``error``, an HTTP status or an error type),
    ``since`` (``1h``, ``30m``, ``2d`` or an ISO-8601 time), ``limit`` (1..1000, default 50).
    ``projects``: only requests of these projects (``None``: all)."""
    unknown = sorted(set(filters) - set(LIST_FILTERS))
    if unknown:
        raise ValidationError(
            [f"{k}: unknown filter (known: {', '.join(LIST_FILTERS)})" for k in unknown]
        )
    nul = [k for k, v in filters.items() if "\x00" in str(v)]
    if nul:
        raise ValidationError([f"{k}: must not contain a NUL character" for k in sorted(nul)])
    raw_limit = filters.get("limit")
    limit = 50
    if raw_limit not in (None, ""):
        try:
            limit = int(raw_limit)
        except (TypeError, ValueError):
            raise ValidationError(f"limit: {raw_limit!r} is not an integer") from None
        if not 1 <= limit <= _MAX_LIST:
            raise ValidationError(f"limit: must be between 1 and {_MAX_LIST}")
    rows = spans.search(
        vk_id=filters.get("key") or None,
        project_id=filters.get("project") or None,
        model=filters.get("model") or None,
        status=(str(filters["status"]).strip().lower() or None) if filters.get("status") else None,
        since=parse_since(filters.get("since")),
        limit=limit,
        project_ids=projects,
    )
    return [request_record(r, detail=False) for r in rows]
