-- The text of each message, name and topic event (written with the event,
-- deleted when it is redacted); rowid = stream_ordering.
CREATE VIRTUAL TABLE event_search USING fts5(
    value, stream_ordering UNINDEXED, event_id UNINDEXED, room_id UNINDEXED,
    sender UNINDEXED, key UNINDEXED, tokenize = 'porter unicode61');

-- The words each user is found by; rowid = a 63-bit hash of user_id.
CREATE VIRTUAL TABLE user_directory_search USING fts5(words, user_id UNINDEXED);
