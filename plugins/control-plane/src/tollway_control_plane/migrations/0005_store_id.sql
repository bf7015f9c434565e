-- Tollway control-plane schema, version 3: the store's own id.
--
-- A random id given to the store when it is created (or first migrated to this version) and
-- kept in it. Gateways report it on /readyz and `tollway status` compares it with the store the
-- CLI finds, so a CLI and a gateway working on different stores is detected, not guessed.

CREATE TABLE store_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

INSERT INTO store_meta (name, value) VALUES ('store_id', @NEW_STORE_ID@);
