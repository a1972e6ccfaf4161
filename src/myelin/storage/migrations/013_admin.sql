-- The Synapse-compatible admin API (/_synapse/admin): what an admin sets on
-- users and rooms beyond the client API, and the jobs it runs.

-- A shadow-banned user's sends succeed for them but reach nobody; user_type
-- is Synapse's free-form account kind ("support", "bot", NULL = normal).
ALTER TABLE users ADD COLUMN shadow_banned SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN user_type TEXT;

-- Rooms nobody on this server may join (set by the admin, or by deleting a room with block).
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL
);

-- Per-user message rate limit replacing rc_message (0 and 0 = unlimited).
CREATE TABLE ratelimit_override (
    user_id TEXT PRIMARY KEY,
    messages_per_second BIGINT NOT NULL,
    burst_count BIGINT NOT NULL
);

-- The server notices room of each user (created once, reused while they stay in it).
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);

-- Room deletions and history purges the admin started: kind "delete" or
-- "purge"; status scheduled/active/complete/failed; result JSON (shutdown_room).
CREATE TABLE admin_jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    room_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    result TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX admin_jobs_by_room ON admin_jobs (room_id);
