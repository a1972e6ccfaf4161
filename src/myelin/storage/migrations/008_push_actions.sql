-- What the push rules gave each local user for each event (written with the
-- event, by the push actions indexer), and the pushers clients registered.

-- One row per (user, event) whose actions notify or highlight. thread_id is the event's
-- thread root, or "main". notif/highlight: whether it counts towards the unread
-- counts (an invite notifies the invitee but is never unread). Unread counts are the rows after the user's read
-- receipts; /notifications pages them newest first.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    notif SMALLINT NOT NULL,
    highlight SMALLINT NOT NULL,
    actions TEXT NOT NULL,
    inserted_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
-- Counting for /sync: a user's rows in given rooms after a position.
CREATE INDEX event_push_actions_by_room ON event_push_actions (user_id, room_id, stream_ordering);
-- /notifications and a pusher's "actions after position N for user U".
CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);

-- Pushers (POST /pushers/set): unique per (user, app_id, pushkey); the device
-- and access token that set one, so logging that device out removes it.
-- last_stream_ordering is where delivery to the gateway has got to.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT NOT NULL,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    device_id TEXT,
    access_token TEXT,
    created_ts BIGINT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_app_pushkey ON pushers (app_id, pushkey);
CREATE INDEX pushers_by_device ON pushers (user_id, device_id);
