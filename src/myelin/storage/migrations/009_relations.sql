-- Relations between events (m.relates_to with a rel_type), written by the
-- relations indexer in the child event's own transaction, and one row per
-- thread (root, latest reply, reply count) for /threads and bundled
-- aggregations. A redacted child loses its row: the relationship is broken.

-- event_id is the child; thread_id is the thread root the child belongs to
-- (its parent for m.thread, its parent's thread otherwise), NULL outside threads.
CREATE TABLE event_relations (
    event_id TEXT NOT NULL PRIMARY KEY,
    parent_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    event_type TEXT NOT NULL,
    sender TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    thread_id TEXT
);

CREATE INDEX event_relations_parent ON event_relations (parent_id, stream_ordering);
CREATE INDEX event_relations_parent_type ON event_relations (parent_id, rel_type, stream_ordering);

CREATE TABLE threads (
    thread_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_stream_ordering BIGINT NOT NULL,
    reply_count BIGINT NOT NULL
);

CREATE INDEX threads_by_activity ON threads (room_id, latest_stream_ordering);
