-- Application services: how far each service's transactions have reached
-- in the events stream, the transaction in flight (stored before it is sent,
-- so a restart resends exactly it, under the same id), and the rooms each
-- service published to its networks' room directories.
CREATE TABLE appservice_state (
    appservice_id TEXT PRIMARY KEY,
    events_position BIGINT NOT NULL,
    last_txn_id BIGINT NOT NULL
);

CREATE TABLE appservice_txns (
    appservice_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    events_position BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (appservice_id, txn_id)
);

CREATE TABLE appservice_room_list (
    appservice_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);
CREATE INDEX appservice_room_list_by_room ON appservice_room_list (room_id);
