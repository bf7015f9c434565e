-- Tollway control-plane schema, version 7: admin API tokens.
--
-- An API token holds permissions (a JSON list such as ["virtualKeys:create"]) at a scope: an
-- organization, a team or a project (the ids of the levels above are stored too, so a scope
-- check is a comparison). Only the HMAC-SHA256 of the secret under the pepper is stored, like a
-- virtual key's; the secret is shown once, when the token is created. Revocation is final.

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    display_prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    scope_type TEXT NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    team_id TEXT REFERENCES teams (id),
    project_id TEXT REFERENCES projects (id),
    permissions TEXT NOT NULL,
    expires_at TEXT,
    last_used_at TEXT,
    revoked_at TEXT,
    created_by TEXT,
    created_at TEXT NOT NULL
);

CREATE INDEX ix_api_tokens_organization ON api_tokens (organization_id);
