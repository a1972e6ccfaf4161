"""The engine-neutral database interface that every store is written against."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cached_property
from typing import Any

from myelin.storage.engines.stats import TransactionStats

Row = Sequence[Any]


class Transaction(ABC):
    """A unit of work on one connection; committed when the block exits cleanly."""

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the number of rows changed where known."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many rows. Engines may defer it until the
        next statement that returns something, or the commit."""

    @abstractmethod
    def defer(self, sql: str, *args: Any) -> None:
        """Queue a statement whose result is not needed. It runs, in order,
        before the next statement that is awaited, or at commit; on SQLite
        this turns a write transaction into one or two thread hops."""

    @abstractmethod
    async def flush(self) -> None:
        """Run every deferred statement now."""

    @abstractmethod
    async def fetchall(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetchall(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchone(sql, *args)
        return None if row is None else row[0]


class Database(ABC):
    """A connection pool for one engine.

    Outside a transaction every call is its own statement (autocommit);
    ``transaction()`` groups statements atomically.
    """

    engine: str  # "sqlite" | "postgres"

    @cached_property
    def stats(self) -> TransactionStats:
        return TransactionStats()

    @abstractmethod
    def transaction(self, name: str | None = None) -> AbstractAsyncContextManager[Transaction]:
        """``async with db.transaction() as txn:``; ``name`` (default: the
        calling function's) labels its count and latency in the metrics."""

    @abstractmethod
    def pool_stats(self) -> dict[str, int]:
        """Connections: ``size`` open, ``in_use`` now, ``max`` allowed."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def fetchall(self, sql: str, *args: Any) -> list[Row]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.transaction("execute") as txn:
            result: int = await txn.execute(sql, *args)
            return result

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetchall(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchone(sql, *args)
        return None if row is None else row[0]
