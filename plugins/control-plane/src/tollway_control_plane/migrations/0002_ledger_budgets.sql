-- Tollway control-plane schema, version 2: the spend ledger as the budgets plugin fills it.
--
-- Ledger rows arrive in batches from each gateway's durable outbox
-- (POST /api/internal/gateway/ledger), deduplicated by request_id. created_at is the time the
-- gateway admitted the request (the budget window the request counts in); cost_usd is
-- micro-USD, rounded once per request. A budget's spend is SUM(cost_usd) over its scope
-- column since the start of its current window (or its reset_at): the indexes below serve
-- exactly that query, one per scope column.

ALTER TABLE ledger ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0;

-- The HTTP status of the call's answer (NULL: the client left before it was sent).
ALTER TABLE ledger ADD COLUMN status BIGINT;

-- 1 when the gateway estimated the usage (a stream cut before the provider reported it).
ALTER TABLE ledger ADD COLUMN usage_estimated BIGINT NOT NULL DEFAULT 0;

-- Which gateway process wrote the row (host:pid), for troubleshooting.
ALTER TABLE ledger ADD COLUMN gateway_node_id TEXT;

CREATE INDEX ix_ledger_organization_time ON ledger (organization_id, created_at);

CREATE INDEX ix_ledger_team_time ON ledger (team_id, created_at);

CREATE INDEX ix_ledger_project_time ON ledger (project_id, created_at);

CREATE INDEX ix_ledger_vk_time ON ledger (vk_id, created_at);

CREATE INDEX ix_ledger_principal_time ON ledger (principal_id, created_at);

CREATE INDEX ix_ledger_end_user_time ON ledger (end_user_id, created_at);
