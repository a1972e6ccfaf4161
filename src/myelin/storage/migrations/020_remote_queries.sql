-- What other servers told us about their users and media (federation queries).

-- The device list of a remote user we share a room with, as last synced:
-- `stream_id` is the origin's position of the newest update applied (from
-- `/user/devices` or an `m.device_list_update` EDU); `resync_needed` marks a
-- list that a lost update made stale (the next read fetches it again).
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    resync_needed SMALLINT NOT NULL DEFAULT 0,
    updated_ts BIGINT NOT NULL
);

-- One row per device of a remote user: its display name and device keys JSON.
CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    keys_json TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- A remote user's public cross-signing keys (master, self_signing), as signed JSON.
CREATE TABLE remote_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Media fetched from another server, kept in the media store under
-- `filesystem_id` (a local id no upload ever gets, so files and thumbnails
-- use the same paths and the same thumbnails table as local media).
CREATE TABLE remote_media_cache (
    media_origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    filesystem_id TEXT NOT NULL UNIQUE,
    media_type TEXT,
    media_length BIGINT,
    upload_name TEXT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    last_access_ts BIGINT,
    quarantined_by TEXT,
    PRIMARY KEY (media_origin, media_id)
);

-- `/user/devices` answers with the newest change of one user's list.
CREATE INDEX device_lists_stream_by_user ON device_lists_stream (user_id, stream_id);
