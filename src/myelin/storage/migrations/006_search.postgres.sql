CREATE TABLE event_search (
    value TEXT NOT NULL,
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    key TEXT NOT NULL,
    vector tsvector GENERATED ALWAYS AS (to_tsvector('english', value)) STORED
);

CREATE INDEX event_search_vector ON event_search USING GIN (vector);

CREATE INDEX event_search_by_room ON event_search (room_id, stream_ordering);

CREATE TABLE user_directory_search (
    words TEXT NOT NULL,
    user_id TEXT PRIMARY KEY,
    vector tsvector GENERATED ALWAYS AS (to_tsvector('simple', words)) STORED
);

CREATE INDEX user_directory_search_vector ON user_directory_search USING GIN (vector);
