CREATE SEQUENCE receipts_stream_seq;
CREATE SEQUENCE presence_stream_seq;
CREATE SEQUENCE to_device_stream_seq;
CREATE SEQUENCE account_data_stream_seq;
CREATE SEQUENCE device_lists_stream_seq;
CREATE SEQUENCE push_rules_stream_seq;
CREATE SEQUENCE caches_stream_seq;
