"""The streams of this process: writers' position generators and the view.

One list of streams (`stream_defs.STREAM_CLASSES`, plus the in-memory
`typing`) gives every process the same streams. A process holds a position
generator for each stream but may only allocate on those it is a writer of
(the generator refuses otherwise); what it *reads* as "now" is the
:class:`StreamView`, filled from the bus, never its own generators.
"""

from __future__ import annotations

import time
from typing import Any

from myelin.app.roles import ProcessRoles
from myelin.replication.positions import StreamView
from myelin.replication.stream_defs import STREAM_CLASSES, Stream
from myelin.replication.tokens import SyncToken
from myelin.storage.engines import Database
from myelin.storage.id_generators import PositionSource, StreamIdGenerator


class MemoryStreamGenerator(PositionSource):
    """Positions of a stream kept only in memory (``typing``).

    Positions follow the wall clock in ms, so the first change after a
    restart is still ahead of tokens handed out by the previous process.
    """

    async def setup(self) -> None:
        self._current = int(time.time() * 1000)

    @property
    def max_allocated(self) -> int:
        return self._current

    def advance_idle(self, position: int) -> bool:
        return False

    def write(self, row: Any) -> int:
        """Allocate a position for ``row`` and announce it at once."""
        self._check_writer()
        previous = self._current
        self._current = max(previous + 1, int(time.time() * 1000))
        self._announce(previous, [(self._current, row)])
        return self._current


class Streams:
    def __init__(self, db: Database, roles: ProcessRoles) -> None:
        self.roles = roles
        self.definitions: dict[str, Stream] = {cls.NAME: cls(db) for cls in STREAM_CLASSES}
        self.generators: dict[str, StreamIdGenerator] = {
            cls.NAME: StreamIdGenerator(db, cls.NAME, table=cls.TABLE, column=cls.TABLE_POSITION)
            for cls in STREAM_CLASSES
        }
        self.typing = MemoryStreamGenerator("typing")
        writers = {name: roles.writers_of(name) for name in [*self.generators, "typing"]
                   if name != "caches"}
        for name, generator in self.generators.items():
            generator.is_writer = name == "caches" or roles.instance_name in writers[name]
        self.typing.is_writer = roles.instance_name in writers["typing"]
        self.events_id_gen = self.generators["events"]
        self.view = StreamView(writers)

    async def setup(self) -> None:
        for generator in self.generators.values():
            await generator.setup()
        await self.typing.setup()

    def written(self) -> dict[str, Any]:
        """The generators of the streams this process writes."""
        out: dict[str, Any] = {n: g for n, g in self.generators.items() if g.is_writer}
        if self.typing.is_writer:
            out["typing"] = self.typing
        return out

    def position(self, stream: str) -> int:
        return self.view.position(stream)

    def current_token(self) -> SyncToken:
        return self.view.current_token()

    def fence_position(self, stream: str) -> int:
        """Where this process's writes on ``stream`` have got to (allocated)."""
        if stream == "typing":
            return self.typing.current_position
        return self.generators[stream].max_allocated

