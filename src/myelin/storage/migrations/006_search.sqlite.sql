-- SQLite: FTS5 indexes. Their rowids are event_search.stream_ordering and
-- user_directory.id; the stores keep them in step with those tables.
CREATE VIRTUAL TABLE event_search_fts USING fts5(value, tokenize = 'porter unicode61');

-- Every local user (from registration on) with the profile the directory shows.
CREATE TABLE user_directory (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    display_name TEXT,
    avatar_url TEXT
);

CREATE VIRTUAL TABLE user_directory_fts USING fts5(words);
