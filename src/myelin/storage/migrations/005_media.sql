-- The media repository: local uploads (with who uploaded them and when),
-- their generated thumbnails, and the URL preview cache.

-- One row per local media id. A row made by POST /create has upload_ts NULL
-- (pending) until its content is PUT, and expires at unused_expires_at.
-- `authenticated`: uploaded while enable_authenticated_media was on, so the
-- unauthenticated /_matrix/media/v3 download endpoints do not serve it.
CREATE TABLE local_media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    upload_ts BIGINT,
    unused_expires_at BIGINT,
    media_type TEXT,
    media_length BIGINT,
    upload_name TEXT,
    sha256 TEXT,
    authenticated SMALLINT NOT NULL DEFAULT 0,
    last_access_ts BIGINT,
    quarantined_by TEXT,
    safe_from_quarantine SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX local_media_by_user ON local_media (user_id, created_ts);
CREATE INDEX local_media_by_access ON local_media (last_access_ts);

-- Thumbnails generated from a local media, one file each on disk.
CREATE TABLE local_media_thumbnails (
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    animated SMALLINT NOT NULL,
    thumbnail_type TEXT NOT NULL,
    thumbnail_width INTEGER NOT NULL,
    thumbnail_height INTEGER NOT NULL,
    length BIGINT NOT NULL,
    PRIMARY KEY (media_id, width, height, method, animated)
);

-- URL previews: the OpenGraph JSON fetched for a URL at download_ts, valid
-- until expires_ts.
CREATE TABLE url_preview_cache (
    url TEXT NOT NULL,
    download_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL,
    og TEXT NOT NULL,
    PRIMARY KEY (url, download_ts)
);
