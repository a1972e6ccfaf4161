-- Remote events in the room DAG (federation/event_handler.py).

-- /send is idempotent per origin and transaction id: the first answer is
-- kept and given again to a retry.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- Remote events that failed the auth rules: never in a timeline or in any
-- state, and not fetched or processed again.
CREATE TABLE rejections (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    rejected_ts BIGINT NOT NULL
);

-- Events that passed the auth rules against the state before them but not
-- against the room's current state: stored (as outliers, with their state)
-- so the DAG stays whole, never sent to clients or used as prev_events.
CREATE TABLE soft_failed_events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
