-- Accounts beyond a password: third-party identifiers, registration tokens,
-- refresh tokens, and the admin's lock and suspension of a user.

-- A user's third-party identifiers (email, msisdn): the admin API adds them
-- today, a validated session later. One address belongs to one user.
CREATE TABLE user_threepids (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_by_user ON user_threepids (user_id);

-- Tokens that let someone register when `registration_requires_token` is on.
-- uses_allowed NULL = unlimited; pending = sessions that passed the stage but
-- have not registered yet; expiry_time NULL = never.
CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    expiry_time BIGINT
);

-- Refresh tokens: each is issued with one access token; refreshing issues the
-- next pair. prev_token is the refresh token this one replaced: it stays
-- usable until this pair is first used, then it is deleted.
CREATE TABLE refresh_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    prev_token TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_by_user_device ON refresh_tokens (user_id, device_id);

-- The refresh token an access token was issued with, and whether it was used
-- (its first use revokes the refresh token before it).
ALTER TABLE access_tokens ADD COLUMN refresh_token TEXT;
ALTER TABLE access_tokens ADD COLUMN used SMALLINT NOT NULL DEFAULT 0;

ALTER TABLE users ADD COLUMN locked SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN suspended SMALLINT NOT NULL DEFAULT 0;
