-- Content reports (the reports tables need an id allocated on insert; the
-- column type differs per engine). `content` is the report as the admin API
-- shows it (reason, score), JSON.
CREATE TABLE event_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ts BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT,
    content TEXT NOT NULL
);

CREATE TABLE room_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ts BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT
);

CREATE TABLE user_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ts BIGINT NOT NULL,
    target_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT
)
