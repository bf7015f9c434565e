-- Tollway control-plane schema, version 1.
--
-- Portable SQL: the same file runs on SQLite and PostgreSQL. The migration runner replaces
-- two tokens per dialect: @AUTOINCREMENT_PK@ (an auto-incrementing integer primary key) and
-- @NOW@ (the time the migration runs, as a quoted ISO-8601 UTC string).
-- Conventions: ids are prefixed ULIDs (TEXT); times are ISO-8601 UTC strings
-- ('2026-01-31T12:00:00.000000Z', so they sort as text); JSON is stored as TEXT; booleans
-- are BIGINT 0/1; money is BIGINT micro-USD (1 USD = 1000000).
-- Statements are separated by a semicolon at the end of a line.

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, name)
);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (team_id, name)
);

-- A model provider credential. Visible to keys of its organization (scope_type
-- 'organization'), of its team ('team') or of its project ('project').
-- credential: base64(12-byte nonce || AES-GCM ciphertext+tag), AAD = the provider id, key =
-- HKDF-SHA256(LW_VIRTUAL_KEY_PEPPER, info='tollway provider credentials').
-- credential_hint: the masked form shown after creation ('sk-…abcd').
CREATE TABLE model_providers (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    scope_type TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    base_url TEXT,
    credential TEXT,
    credential_hint TEXT,
    models TEXT,
    priority BIGINT NOT NULL DEFAULT 0,
    config TEXT NOT NULL DEFAULT '{}',
    rpm BIGINT,
    tpm BIGINT,
    rpd BIGINT,
    revision BIGINT NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, name)
);

CREATE INDEX ix_model_providers_scope ON model_providers (scope_type, scope_id);

CREATE TABLE routing_policies (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    is_default BIGINT NOT NULL DEFAULT 0,
    revision BIGINT NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, name)
);

-- A routing policy's providers in dispatch order; model: the model to ask that provider
-- for, whatever the client requested (NULL: the client's model).
CREATE TABLE routing_policy_entries (
    policy_id TEXT NOT NULL REFERENCES routing_policies (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    provider_id TEXT NOT NULL REFERENCES model_providers (id),
    model TEXT,
    PRIMARY KEY (policy_id, position)
);

CREATE INDEX ix_routing_policy_entries_provider ON routing_policy_entries (provider_id);

-- A virtual key. Only hex(HMAC-SHA256(pepper, secret)) is stored. After a rotation the
-- previous hash keeps working until previous_valid_until. status: active | disabled |
-- revoked (revoked is final); expiry is expires_at, checked at resolve time.
CREATE TABLE virtual_keys (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    team_id TEXT REFERENCES teams (id),
    project_id TEXT REFERENCES projects (id),
    scope_type TEXT NOT NULL,
    principal_id TEXT,
    name TEXT NOT NULL,
    env TEXT NOT NULL,
    display_prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    previous_secret_hash TEXT,
    previous_valid_until TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    config TEXT NOT NULL DEFAULT '{}',
    routing_policy_id TEXT REFERENCES routing_policies (id),
    expires_at TEXT,
    revision BIGINT NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    rotated_at TEXT,
    revoked_at TEXT
);

CREATE INDEX ix_virtual_keys_previous_secret_hash ON virtual_keys (previous_secret_hash);

-- Budgets (filled by the budgets plugin). scope_type: organization | team | project |
-- virtual_key | principal | end_user; "window": hour | day | week | month | total (UTC,
-- calendar-aligned; "window" is a reserved word in PostgreSQL: always quote it);
-- limit_usd: micro-USD; on_breach: block | warn; reset_at: spend before it does not count.
CREATE TABLE budgets (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    scope_type TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    name TEXT,
    "window" TEXT NOT NULL,
    limit_usd BIGINT NOT NULL,
    on_breach TEXT NOT NULL DEFAULT 'block',
    reset_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX ix_budgets_scope ON budgets (scope_type, scope_id);

-- The spend ledger: one row per completed request (keyed by request id, so a retry of the
-- outbox never debits twice). cost_usd: micro-USD. Filled by the budgets plugin.
CREATE TABLE ledger (
    request_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    organization_id TEXT,
    team_id TEXT,
    project_id TEXT,
    vk_id TEXT,
    principal_id TEXT,
    end_user_id TEXT,
    provider_id TEXT,
    model TEXT,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX ix_ledger_created_at ON ledger (created_at);

-- What gateways must re-read: the change feed (GET /api/internal/gateway/changes).
-- kind: vk_updated | vk_rotated | vk_revoked | vk_deleted | provider_updated |
-- policy_changed | budget_changed.
CREATE TABLE change_events (
    id @AUTOINCREMENT_PK@,
    kind TEXT NOT NULL,
    vk_id TEXT,
    provider_id TEXT,
    created_at TEXT NOT NULL
);

-- The embedded default's organization, team and project, all named 'default'.
INSERT INTO organizations (id, name, created_at, updated_at)
VALUES ('org_default', 'default', @NOW@, @NOW@);

INSERT INTO teams (id, organization_id, name, created_at, updated_at)
VALUES ('team_default', 'org_default', 'default', @NOW@, @NOW@);

INSERT INTO projects (id, organization_id, team_id, name, created_at, updated_at)
VALUES ('proj_default', 'org_default', 'team_default', 'default', @NOW@, @NOW@);
