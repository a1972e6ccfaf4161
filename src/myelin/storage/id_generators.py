"""Stream position allocation for one writer of one stream.

On PostgreSQL positions come from a sequence, so several processes can
write one stream; on SQLite (one process, one writer connection) from a
locked local counter seeded from the table. Positions are allocated inside
the writing transaction and only become *current* once every lower
position this process allocated has committed or been abandoned, so a
reader that trusts ``current_position`` never skips a row still in flight.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from myelin.storage.engines import Database, Transaction


class PositionTransaction:
    """A database transaction that may allocate positions on one stream."""

    def __init__(self, txn: Transaction, generator: StreamIdGenerator) -> None:
        self.txn = txn
        self._generator = generator
        self.positions: list[int] = []

    async def next_position(self) -> int:
        position = await self._generator._allocate(self.txn)
        self.positions.append(position)
        return position


class StreamIdGenerator:
    def __init__(self, db: Database, stream_name: str, *, table: str, column: str,
                 sequence: str | None = None) -> None:
        self.db = db
        self.stream_name = stream_name
        self._table = table
        self._column = column
        self._sequence = sequence or f"{stream_name}_stream_seq"
        self._max_allocated = 0
        self._current = 0
        self._in_flight: set[int] = set()
        self._listeners: list[Callable[[int], None]] = []

    async def setup(self) -> None:
        value = await self.db.fetchval(f"SELECT MAX({self._column}) FROM {self._table}")
        self._max_allocated = self._current = int(value or 0)
        if self.db.engine == "postgres":
            # Make sure the sequence is ahead of anything already in the table
            # (e.g. after porting a SQLite database).
            seq_value = await self.db.fetchval(
                f"SELECT last_value FROM {self._sequence}")
            if int(seq_value) < self._current:
                await self.db.fetchval(f"SELECT setval('{self._sequence}', ?)", self._current)

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Called with the new current position whenever it advances."""
        self._listeners.append(callback)

    @property
    def current_position(self) -> int:
        return self._current

    async def _allocate(self, txn: Transaction) -> int:
        if self.db.engine == "postgres":
            position = int(await txn.fetchval(f"SELECT nextval('{self._sequence}')"))
        else:
            # One writer connection, and no await between read and write.
            self._max_allocated += 1
            position = self._max_allocated
        self._max_allocated = max(self._max_allocated, position)
        self._in_flight.add(position)
        return position

    def _finish(self, positions: list[int]) -> None:
        for position in positions:
            self._in_flight.discard(position)
        new_current = (min(self._in_flight) - 1) if self._in_flight else self._max_allocated
        if new_current > self._current:
            self._current = new_current
            for callback in self._listeners:
                callback(new_current)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PositionTransaction]:
        """``async with gen.transaction() as ptxn: pos = await ptxn.next_position()``"""
        ptxn: PositionTransaction | None = None
        try:
            async with self.db.transaction() as txn:
                ptxn = PositionTransaction(txn, self)
                yield ptxn
        finally:
            if ptxn is not None:
                self._finish(ptxn.positions)
