-- Tollway control-plane schema, version 6: routing policies may name config-file providers.
--
-- A routing policy entry is a stored provider (routing_policy_entries, a foreign key to
-- model_providers) or a provider of the gateway's own config file, named as the file names it
-- (this table). Positions are one sequence across both tables: the policy's order.

CREATE TABLE routing_policy_config_entries (
    policy_id TEXT NOT NULL REFERENCES routing_policies (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    provider_name TEXT NOT NULL,
    model TEXT,
    PRIMARY KEY (policy_id, position)
);
