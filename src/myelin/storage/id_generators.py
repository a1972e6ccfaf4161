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
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from myelin.storage.engines import Database, Transaction
from myelin.storage.engines.stats import caller_name


class NotAWriterError(RuntimeError):
    """This process tried to write a stream it is not a writer of."""


# Called when the current position advances: (previous, new, rows committed in
# (previous, new] as (position, row) pairs, in order).
PositionListener = Callable[[int, int, list[tuple[int, Any]]], None]


class PositionTransaction:
    """A database transaction that may allocate positions on one stream, and
    records the stream rows it writes so they can be announced after commit."""

    def __init__(self, txn: Transaction, generator: StreamIdGenerator) -> None:
        self.txn = txn
        self._generator = generator
        self.positions: list[int] = []
        self.rows: list[tuple[int, Any]] = []

    async def next_position(self) -> int:
        position = await self._generator._allocate(self.txn)
        self.positions.append(position)
        return position

    def add_row(self, position: int, row: Any) -> None:
        """A row other processes must learn about once this transaction commits."""
        self.rows.append((position, row))


class PositionSource:
    """What a stream's writer side shares, in the database or in memory: the
    current position, who hears of its advances, and refusing to allocate on
    a process that is not a writer of the stream."""

    def __init__(self, stream_name: str) -> None:
        self.stream_name = stream_name
        self.is_writer = True
        self._current = 0
        self._listeners: list[PositionListener] = []

    def add_listener(self, callback: PositionListener) -> None:
        """Called with (previous, new, rows) whenever the current position advances."""
        self._listeners.append(callback)

    @property
    def current_position(self) -> int:
        return self._current

    def _check_writer(self) -> None:
        if not self.is_writer:
            raise NotAWriterError(f"this process is not a writer of the {self.stream_name} stream")

    def _announce(self, previous: int, rows: list[tuple[int, Any]]) -> None:
        for callback in self._listeners:
            callback(previous, self._current, rows)


class StreamIdGenerator(PositionSource):
    def __init__(self, db: Database, stream_name: str, *, table: str, column: str,
                 sequence: str | None = None) -> None:
        super().__init__(stream_name)
        self.db = db
        self._table = table
        self._column = column
        self._sequence = sequence or f"{stream_name}_stream_seq"
        self._max_allocated = 0
        self.rows_written = 0  # rows committed by this process (the metrics' counter)
        self._in_flight: set[int] = set()
        # Rows of committed positions not yet announced (a lower position is in flight).
        self._unannounced: list[tuple[int, Any]] = []

    async def setup(self) -> None:
        value = await self.db.fetchval(f"SELECT MAX({self._column}) FROM {self._table}")
        high_water = await self.db.fetchval(
            "SELECT position FROM stream_high_water WHERE stream_name = ?", self.stream_name)
        self._max_allocated = self._current = max(int(value or 0), int(high_water or 0))
        if self.db.engine == "postgres":
            # Make sure the sequence is ahead of anything already in the table
            # (e.g. after porting a SQLite database).
            seq_value = await self.db.fetchval(
                f"SELECT last_value FROM {self._sequence}")
            if int(seq_value) < self._current:
                await self.db.fetchval(f"SELECT setval('{self._sequence}', ?)", self._current)

    @property
    def max_allocated(self) -> int:
        """The highest position handed out: a write's fence once it has returned."""
        return self._max_allocated

    def advance_idle(self, position: int) -> bool:
        """Claim ``position`` while nothing is in flight here.

        With several writers on one PostgreSQL sequence, a writer that has
        nothing in flight will only ever allocate above the highest position
        anyone has reached, so it may say it has persisted up to there; that
        lets readers' minimum move on while this writer is idle.
        """
        if self._in_flight or position <= self._current:
            return False
        self._max_allocated = max(self._max_allocated, position)
        self._advance(position)
        return True

    async def _allocate(self, txn: Transaction) -> int:
        self._check_writer()
        if self.db.engine == "postgres":
            position = int(await txn.fetchval(f"SELECT nextval('{self._sequence}')"))
        else:
            # One writer connection, and no await between read and write.
            self._max_allocated += 1
            position = self._max_allocated
            # Remembered with the rows, so deleting them later (or a restart)
            # never makes the stream hand this position out again.
            txn.defer("INSERT INTO stream_high_water (stream_name, position) VALUES (?, ?)"
                      " ON CONFLICT (stream_name) DO UPDATE SET position = excluded.position",
                      self.stream_name, position)
        self._max_allocated = max(self._max_allocated, position)
        self._in_flight.add(position)
        return position

    def _finish(self, positions: list[int], rows: list[tuple[int, Any]]) -> None:
        for position in positions:
            self._in_flight.discard(position)
        self._unannounced.extend(rows)
        self.rows_written += len(rows)
        new_current = (min(self._in_flight) - 1) if self._in_flight else self._max_allocated
        if new_current > self._current:
            self._advance(new_current)

    def _advance(self, new_current: int) -> None:
        previous = self._current
        self._current = new_current
        ready = [r for r in self._unannounced if r[0] <= new_current]
        if ready:
            self._unannounced = [r for r in self._unannounced if r[0] > new_current]
            ready.sort(key=lambda r: r[0])
        self._announce(previous, ready)

    def transaction(self, name: str | None = None,
                    ) -> AbstractAsyncContextManager[PositionTransaction]:
        """``async with gen.transaction() as ptxn: pos = await ptxn.next_position()``;
        ``name`` (default: the calling function's) labels it in the metrics."""
        return self._transaction(name or caller_name())

    @asynccontextmanager
    async def _transaction(self, name: str) -> AsyncIterator[PositionTransaction]:
        ptxn: PositionTransaction | None = None
        committed = False
        try:
            async with self.db.transaction(name) as txn:
                ptxn = PositionTransaction(txn, self)
                yield ptxn
            committed = True
        finally:
            if ptxn is not None:
                # A rolled-back transaction's positions are abandoned: no rows.
                self._finish(ptxn.positions, ptxn.rows if committed else [])
