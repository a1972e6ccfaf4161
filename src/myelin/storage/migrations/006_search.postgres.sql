-- PostgreSQL: tsvector columns under GIN indexes.
ALTER TABLE event_search ADD COLUMN vector tsvector NOT NULL;

CREATE INDEX event_search_vector ON event_search USING GIN (vector);

-- Every local user (from registration on) with the profile the directory shows.
CREATE TABLE user_directory (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT,
    vector tsvector NOT NULL
);

CREATE INDEX user_directory_vector ON user_directory USING GIN (vector);
