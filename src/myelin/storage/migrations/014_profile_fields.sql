-- Custom profile fields (spec v1.16 extended profiles): any key of the
-- profile grammar other than displayname/avatar_url, with any JSON value.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value_json TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);
