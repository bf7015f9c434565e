-- Tollway control-plane schema, version 8: routing strategies and entry weights.
--
-- A routing policy walks its entries in an order chosen per request by its strategy
-- (ordered, weighted, least-latency, least-busy; see tollway.routing); under "weighted" each
-- entry's weight is its share (0: fallback only). Existing policies keep their fixed order.

ALTER TABLE routing_policies ADD COLUMN strategy TEXT NOT NULL DEFAULT 'ordered';

ALTER TABLE routing_policy_entries ADD COLUMN weight BIGINT NOT NULL DEFAULT 1;

ALTER TABLE routing_policy_config_entries ADD COLUMN weight BIGINT NOT NULL DEFAULT 1;
