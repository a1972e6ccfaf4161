-- Which identity servers this server bound each user's addresses on
-- (/account/3pid/bind), so unbinding and deactivation know whom to tell.
CREATE TABLE user_threepid_id_server (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    id_server TEXT NOT NULL,
    PRIMARY KEY (user_id, medium, address, id_server)
);
