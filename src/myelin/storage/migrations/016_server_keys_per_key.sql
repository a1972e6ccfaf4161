-- A notary answers per key id (the latest response that listed that key),
-- so an origin forgetting an old key does not make us forget it: the signed
-- key responses are kept per (server, key id). server_keys_json (one row per
-- server) only ever held a cache; it goes.
DROP TABLE server_keys_json;

CREATE TABLE server_key_responses (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    from_server TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
