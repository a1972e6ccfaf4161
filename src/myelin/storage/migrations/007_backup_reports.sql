-- Server-side key backups (/room_keys), content reports, OpenID tokens.

-- A user's key backup versions. `version` counts up per user and is never
-- reused: a deleted version keeps its row (deleted = 1) so the next backup
-- gets a higher number. `etag` is bumped whenever the version's keys change.
CREATE TABLE e2e_room_keys_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

-- The backed-up session keys of a version; session_data is the client's
-- encrypted JSON, stored as given.
CREATE TABLE e2e_room_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified SMALLINT NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- OpenID tokens handed out by /user/{userId}/openid/request_token, answered
-- by the federation's /openid/userinfo until they expire.
CREATE TABLE open_id_tokens (
    token TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    ts_valid_until_ms BIGINT NOT NULL
);

CREATE INDEX open_id_tokens_expiry ON open_id_tokens (ts_valid_until_ms);
