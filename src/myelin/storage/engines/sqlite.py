"""SQLite engine: WAL mode, every statement run off the event loop.

One writer connection owns a dedicated thread; transactions queue for it
behind an asyncio lock, which is also what makes SQLite's single-writer rule
explicit. Reads outside transactions go to a small pool of reader
connections (WAL lets them run beside the writer), except for in-memory
databases, which only exist on one connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from myelin.storage.engines.base import Database, Row, Transaction
from myelin.storage.engines.stats import caller_name

T = TypeVar("T")


class _Connection:
    """A sqlite3 connection pinned to one thread."""

    def __init__(self, path: str, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._path = path
        self.conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.run(self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                               timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA busy_timeout=30000")
        self.conn = conn

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def close(self) -> None:
        if self.conn is not None:
            conn = self.conn
            await self.run(conn.close)
            self.conn = None
        self._executor.shutdown(wait=True)


class SqliteTransaction(Transaction):
    """Statements whose result nobody needs (``defer``, BEGIN, COMMIT) are
    queued and sent to the connection's thread together with the next
    statement that does need one, so a typical write transaction costs one
    or two thread hops instead of one per statement."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._pending: list[tuple[str, Sequence[Any], bool]] = []

    def _c(self) -> sqlite3.Connection:
        assert self._conn.conn is not None
        return self._conn.conn

    def _run_pending(self, pending: list[tuple[str, Sequence[Any], bool]]) -> None:
        conn = self._c()
        for sql, args, many in pending:
            if many:
                conn.executemany(sql, args)
            else:
                conn.execute(sql, args)

    def _take_pending(self) -> list[tuple[str, Sequence[Any], bool]]:
        pending, self._pending = self._pending, []
        return pending

    def defer(self, sql: str, *args: Any) -> None:
        self._pending.append((sql, args, False))

    async def flush(self) -> None:
        pending = self._take_pending()
        if pending:
            await self._conn.run(lambda: self._run_pending(pending))

    async def execute(self, sql: str, *args: Any) -> int:
        pending = self._take_pending()

        def work() -> int:
            self._run_pending(pending)
            return int(self._c().execute(sql, args).rowcount)

        return await self._conn.run(work)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._pending.append((sql, rows, True))

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        pending = self._take_pending()

        def work() -> list[Row]:
            self._run_pending(pending)
            return self._c().execute(sql, args).fetchall()

        return await self._conn.run(work)


class SqliteDatabase(Database):
    engine = "sqlite"

    def __init__(self, path: str, readers: int = 4) -> None:
        self.path = path
        self._writer = _Connection(path, "sqlite-writer")
        self._write_lock = asyncio.Lock()
        in_memory = path == ":memory:" or path.startswith("file::memory:")
        self._readers = [] if in_memory else [_Connection(path, f"sqlite-reader{i}")
                                              for i in range(readers)]
        self._free_readers: asyncio.Queue[_Connection] = asyncio.Queue()

    async def open(self) -> None:
        await self._writer.open()
        for reader in self._readers:
            await reader.open()
            self._free_readers.put_nowait(reader)

    def transaction(self, name: str | None = None) -> AbstractAsyncContextManager[Transaction]:
        return self._transaction(name or caller_name())

    @asynccontextmanager
    async def _transaction(self, name: str) -> AsyncIterator[Transaction]:
        start = time.perf_counter()
        async with self._write_lock:
            txn = SqliteTransaction(self._writer)
            txn.defer("BEGIN IMMEDIATE")
            try:
                yield txn
                txn.defer("COMMIT")
                await txn.flush()
            except BaseException:
                txn._take_pending()
                if self._writer.conn is not None and self._writer.conn.in_transaction:
                    await self._writer.run(lambda: self._writer.conn.execute("ROLLBACK")
                                           if self._writer.conn else None)
                self.stats.observe(name, time.perf_counter() - start, False)
                raise
        self.stats.observe(name, time.perf_counter() - start, True)

    def pool_stats(self) -> dict[str, int]:
        # The writer, plus the readers; in use: the writer while a transaction
        # holds it, the readers taken from the free queue.
        size = 1 + len(self._readers)
        in_use = int(self._write_lock.locked()) + len(self._readers) - self._free_readers.qsize()
        return {"size": size, "in_use": in_use, "max": size}

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        if not self._readers:
            async with self._write_lock:
                return await SqliteTransaction(self._writer).fetchall(sql, *args)
        reader = await self._free_readers.get()
        try:
            return await SqliteTransaction(reader).fetchall(sql, *args)
        finally:
            self._free_readers.put_nowait(reader)

    async def close(self) -> None:
        await self._writer.close()
        for reader in self._readers:
            await reader.close()
