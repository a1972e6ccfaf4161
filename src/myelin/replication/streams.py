"""The streams of this process: their writers' position generators.

Each stream has a name, a table its rows live in, and a position generator
for the writer in this process. Readers ask ``current_position``; the
notifier and (in a fleet) the bus learn of new positions from the
generators' listeners.
"""

from __future__ import annotations

from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator


class Streams:
    def __init__(self, db: Database) -> None:
        self.events_id_gen = StreamIdGenerator(db, "events", table="events",
                                               column="stream_ordering")

    async def setup(self) -> None:
        for generator in self.generators():
            await generator.setup()

    def generators(self) -> list[StreamIdGenerator]:
        return [self.events_id_gen]
