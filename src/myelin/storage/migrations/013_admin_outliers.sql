-- A history purge keeps the state events before its point (the room's state
-- and auth need them) but takes them out of every timeline: outlier = 1
-- leaves them loadable by id and out of /messages and /sync timelines.
ALTER TABLE events ADD COLUMN outlier SMALLINT NOT NULL DEFAULT 0;
