-- Server-side search and the user directory.
--
-- The full-text tables have the same name and columns on both engines: on
-- SQLite they are FTS5 tables, on PostgreSQL plain tables whose tsvector is a
-- generated column under a GIN index (so `myelin port-db` copies them and
-- PostgreSQL derives its vectors). Their text is already reduced to words
-- (storage/fts.py), the same on both.

-- Every local user (from registration on) with the profile the directory shows.
CREATE TABLE user_directory (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT
);

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
