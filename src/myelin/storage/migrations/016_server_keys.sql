-- Other servers' signing keys, as fetched from them or from a notary
-- (federation/keyring.py). A key from `verify_keys` is usable for signatures
-- made up to `valid_until_ts` (already capped at fetch time + 7 days); one
-- from `old_verify_keys` (old = 1) for signatures made before its expired_ts,
-- kept in the same column.
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    old INTEGER NOT NULL DEFAULT 0,
    fetched_ts BIGINT NOT NULL,
    from_server TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The latest signed key response of each server, as served again by our
-- notary endpoint (/_matrix/key/v2/query).
CREATE TABLE server_keys_json (
    server_name TEXT NOT NULL PRIMARY KEY,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    from_server TEXT NOT NULL,
    key_json TEXT NOT NULL
);
