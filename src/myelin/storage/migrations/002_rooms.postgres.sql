CREATE SEQUENCE events_stream_seq;
CREATE SEQUENCE state_group_id_seq;
