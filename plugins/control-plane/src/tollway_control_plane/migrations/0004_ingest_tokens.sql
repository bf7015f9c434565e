-- Tollway control-plane schema, version 4: per-project OTLP ingest tokens.
--
-- A project's ingest token is the X-Auth-Token its gateways send with spans to
-- /api/otel/v1/traces. The token itself is derived from the pepper, the project id and the
-- generation (so the config bundle of a project-scoped key can carry it); only its SHA-256 is
-- stored, to find the project a presented token belongs to. Rotating bumps the generation: the
-- old token stops working at once. A project without a row has generation 1 (the row is
-- written the first time its token is derived).

CREATE TABLE project_ingest_tokens (
    project_id TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    generation BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
