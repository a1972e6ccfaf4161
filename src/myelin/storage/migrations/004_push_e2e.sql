-- Push rules a user defined, and their overrides of the server-default rules;
-- end-to-end cross-signing keys and the signatures uploaded for keys.

-- User-defined rules. Within (user_id, kind), a lower priority_order is more
-- important. `conditions` and `actions` are JSON; `pattern` is for content rules.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority_order BIGINT NOT NULL,
    conditions TEXT NOT NULL,
    actions TEXT NOT NULL,
    pattern TEXT,
    enabled SMALLINT NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to server-default rules (ids starting with "."): NULL keeps the default.
CREATE TABLE push_rules_default_overrides (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled SMALLINT,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);

CREATE INDEX push_rules_stream_by_user ON push_rules_stream (user_id, stream_id);

-- Cross-signing keys: key_type is master, self_signing or user_signing;
-- key_id is the public key (the part after "ed25519:").
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, added to the signed
-- key when it is served. target_key_id is a device id or a cross-signing public key.
CREATE TABLE e2e_key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
