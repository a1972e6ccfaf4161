"""The streams of this process and their writers' position generators.

Each persisted stream has a name, the table its rows live in, and a position
generator for the writer in this process. ``typing`` is in memory only: its
positions restart with the process, which is harmless because typing
notifications are only meaningful for a few seconds.
"""

from __future__ import annotations

from myelin.replication.tokens import SYNC_STREAMS, StreamPosition, SyncToken
from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator

# stream name -> (table, position column)
PERSISTED_STREAMS = {
    "events": ("events", "stream_ordering"),
    "receipts": ("receipts", "stream_id"),
    "presence": ("presence", "stream_id"),
    "to_device": ("device_inbox", "stream_id"),
    "account_data": ("account_data", "stream_id"),
    "device_lists": ("device_lists_stream", "stream_id"),
    "push_rules": ("push_rules_stream", "stream_id"),
    "caches": ("cache_invalidation_stream", "stream_id"),
}


class Streams:
    def __init__(self, db: Database) -> None:
        self.generators: dict[str, StreamIdGenerator] = {
            name: StreamIdGenerator(db, name, table=table, column=column)
            for name, (table, column) in PERSISTED_STREAMS.items()
        }
        self.events_id_gen = self.generators["events"]
        self.typing_position = 0

    async def setup(self) -> None:
        for generator in self.generators.values():
            await generator.setup()

    def position(self, stream: str) -> int:
        if stream == "typing":
            return self.typing_position
        return self.generators[stream].current_position

    def current_token(self) -> SyncToken:
        return SyncToken({name: StreamPosition(self.position(name)) for name in SYNC_STREAMS})
