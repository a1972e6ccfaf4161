-- Backfilled and outlier events take positions below every live one:
-- -nextval(), so each one sorts before the events already stored.
CREATE SEQUENCE events_backfill_seq;
