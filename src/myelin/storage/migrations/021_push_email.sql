-- Sessions of third-party identifier validation done by this server (an
-- emailed link): what requestToken started, and whether its token came back.
CREATE TABLE threepid_validation_sessions (
    session_id TEXT NOT NULL PRIMARY KEY,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    purpose TEXT NOT NULL,
    token TEXT NOT NULL,
    send_attempt BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    token_expires_ts BIGINT NOT NULL,
    validated_ts BIGINT
);
CREATE UNIQUE INDEX threepid_validation_by_secret
    ON threepid_validation_sessions (client_secret, medium, address);
