-- Tollway control-plane schema, version 3: request spans, for the request explorer.
--
-- One row per gateway request span (OTLP), written by the embedded control plane's in-process
-- span sink or by the standalone control plane's OTLP receiver (/api/otel/v1/traces).
-- The columns are what `tollway requests list` filters on; everything else the span says is in
-- attributes (JSON object) and events (JSON array of {name, time_unix_nano, attributes}).
-- started_at is the span's start (ISO-8601 UTC, sorts as text); received_at when it was stored.
-- Rows older than TOLLWAY_TRACE_RETENTION_DAYS, and the oldest past TOLLWAY_TRACE_MAX_SPANS,
-- are deleted by the writer.

CREATE TABLE request_spans (
    id @AUTOINCREMENT_PK@,
    request_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    organization_id TEXT,
    project_id TEXT,
    vk_id TEXT,
    model TEXT,
    served_model TEXT,
    provider TEXT,
    status_code BIGINT,
    error_type TEXT,
    outcome TEXT NOT NULL,
    started_at TEXT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    resource TEXT NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (trace_id, span_id)
);

CREATE INDEX ix_request_spans_request ON request_spans (request_id);

CREATE INDEX ix_request_spans_time ON request_spans (started_at);

CREATE INDEX ix_request_spans_vk_time ON request_spans (vk_id, started_at);

CREATE INDEX ix_request_spans_project_time ON request_spans (project_id, started_at);

CREATE INDEX ix_request_spans_model_time ON request_spans (model, started_at);

CREATE INDEX ix_request_spans_outcome_time ON request_spans (outcome, started_at);

CREATE INDEX ix_request_spans_status_time ON request_spans (status_code, started_at);
