-- The highest position a stream's single SQLite writer has handed out. A
-- table's MAX() is not enough when rows are deleted (a to-device message
-- goes once acknowledged): after a restart the stream must not hand out a
-- position a client's sync token has already passed. PostgreSQL sequences
-- never go back, so only SQLite writes it.
CREATE TABLE stream_high_water (
    stream_name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
