-- Myelin's initial schema. Tables are named for what they map.

-- Accounts -----------------------------------------------------------------
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    created_ts BIGINT NOT NULL,
    admin SMALLINT NOT NULL DEFAULT 0,
    deactivated SMALLINT NOT NULL DEFAULT 0,
    is_guest SMALLINT NOT NULL DEFAULT 0,
    appservice_id TEXT
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT,
    created_ts BIGINT NOT NULL,
    valid_until_ms BIGINT
);
CREATE INDEX access_tokens_by_user_device ON access_tokens (user_id, device_id);

CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT
);

-- User-interactive auth sessions live in the database so that any process
-- of a fleet can continue a session another process started.
CREATE TABLE ui_auth_sessions (
    session_id TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL,
    uri TEXT NOT NULL,
    method TEXT NOT NULL,
    completed TEXT NOT NULL,
    params TEXT NOT NULL
);

CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- Streams ------------------------------------------------------------------
-- The persisted position of each writer of each stream.
CREATE TABLE stream_positions (
    stream_name TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (stream_name, instance_name)
);
