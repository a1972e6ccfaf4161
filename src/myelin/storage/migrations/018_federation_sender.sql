-- Outbound federation (federation/sender/): what each destination has been
-- sent, its backoff, and the durable EDUs still to go. A restarted sender
-- recomputes its queues from these tables.

-- One row per remote server we have tried to send to. retry_last_ts and
-- retry_interval (ms) are its backoff (0: none); last_successful_stream_ordering
-- is how far on the events stream it has received everything we meant for it
-- (NULL: never sent anything).
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval BIGINT NOT NULL DEFAULT 0,
    failure_ts BIGINT,
    last_successful_stream_ordering BIGINT
);

-- The newest event of each room queued for a destination: after a failure or
-- a restart, the rooms whose row is beyond last_successful_stream_ordering get
-- their newest event, and the remote fetches the rest with get_missing_events.
CREATE TABLE federation_destination_rooms (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
CREATE INDEX federation_destination_rooms_by_order
    ON federation_destination_rooms (destination, stream_ordering);

-- How far each federation sender instance has read each stream it turns
-- into transactions (events, receipts, presence, device_lists).
CREATE TABLE federation_stream_positions (
    instance_name TEXT NOT NULL,
    stream_name TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (instance_name, stream_name)
);

-- EDUs that must not be lost (to-device messages for remote users): written
-- by any process, deleted by the destination's sender once the remote has
-- acknowledged the transaction carrying them.
CREATE TABLE federation_outbox (
    outbox_id TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbox_by_destination ON federation_outbox (destination, created_ts);
