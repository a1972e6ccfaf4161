-- Server-side search and the user directory.

-- The searchable text of each message, name and topic event (one row per
-- event, written with the event, deleted when it is redacted). The words
-- themselves are in the engine's full-text index: event_search_fts (SQLite
-- FTS5, rowid = stream_ordering) or event_search.vector (PostgreSQL).
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    key TEXT NOT NULL
);

CREATE INDEX event_search_by_room ON event_search (room_id, stream_ordering);

-- Users joined to rooms whose join rule is public: anyone may find them in
-- the user directory. Kept by the user directory's instance from the events
-- stream.
CREATE TABLE users_in_public_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

CREATE INDEX users_in_public_rooms_by_room ON users_in_public_rooms (room_id);

-- How far the user directory has followed the events stream (one row, id 1):
-- after a restart it goes on from here.
CREATE TABLE user_directory_position (
    id SMALLINT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
