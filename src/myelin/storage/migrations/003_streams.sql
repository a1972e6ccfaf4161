-- Per-user and ephemeral data carried by streams other than `events`.

CREATE TABLE receipts (
    stream_id BIGINT NOT NULL,
    instance_name TEXT NOT NULL,
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_ordering BIGINT,
    data TEXT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_by_stream ON receipts (stream_id);

CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    last_user_sync_ts BIGINT NOT NULL,
    currently_active SMALLINT NOT NULL
);
CREATE INDEX presence_by_stream ON presence (stream_id);

-- To-device messages waiting for their device; deleted once it syncs past them.
CREATE TABLE device_inbox (
    stream_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    message_json TEXT NOT NULL
);
CREATE INDEX device_inbox_by_device ON device_inbox (user_id, device_id, stream_id);
CREATE INDEX device_inbox_by_stream ON device_inbox (stream_id);

CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    inserted_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Global account data has room_id ''.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    account_data_type TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    instance_name TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, account_data_type)
);
CREATE INDEX account_data_by_stream ON account_data (user_id, stream_id);

-- One row per change to a user's device list (new, renamed, deleted, new keys).
CREATE TABLE device_lists_stream (
    stream_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL
);
CREATE INDEX device_lists_stream_by_stream ON device_lists_stream (stream_id);

CREATE TABLE push_rules_stream (
    stream_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    op TEXT NOT NULL
);
CREATE INDEX push_rules_stream_by_stream ON push_rules_stream (stream_id);

-- Cache invalidations that other processes must apply.
CREATE TABLE cache_invalidation_stream (
    stream_id BIGINT NOT NULL,
    instance_name TEXT NOT NULL,
    cache_name TEXT NOT NULL,
    keys TEXT NOT NULL,
    invalidation_ts BIGINT NOT NULL
);
CREATE INDEX cache_invalidation_by_stream ON cache_invalidation_stream (stream_id);

-- End-to-end encryption keys (counts are reported in /sync).
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Small integer ids for instance names, used in multi-writer stream tokens.
CREATE TABLE instance_names (
    instance_id INTEGER PRIMARY KEY,
    instance_name TEXT NOT NULL UNIQUE
);
